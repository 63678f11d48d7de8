//! Borg's compression layer (`docs/borg-format.md` §4).
//!
//! Compression sits between the id hash (computed over the plaintext) and the encryption envelope.
//! Every compressed payload starts with a two-byte header naming its compressor, except legacy zlib,
//! which is recognised by the zlib stream header itself. On decode the header alone decides the
//! decompressor, so archives written with any mix of settings read back.
//!
//! Writing follows borg's decisions exactly: lz4, zstd and lzma store the data uncompressed (header
//! `00 00`) when their output is not smaller than the input; zlib never falls back; `auto,X` asks lz4
//! first and only tries X when lz4 saved at least 3%, keeping X's output only if it is at least 1%
//! smaller than lz4's.

use std::fmt;
use std::io::Write;
use std::str::FromStr;

const NONE: [u8; 2] = [0x00, 0x00];
const LZ4: [u8; 2] = [0x01, 0x00];
const ZSTD: [u8; 2] = [0x03, 0x00];

/// No object decompresses to more than this. Borg's chunkers never cut a chunk larger than
/// `MAX_DATA_SIZE` (the buzhash chunker stops at 8 MiB, the fixed one refuses larger blocks), and
/// its metadata objects are refused above it when written. The payload comes from the repository
/// host, which is not trusted — and in `none` and `authenticated` repositories decompression runs
/// before anything can check the data — so a bomb (a few KiB of zlib or lzma that expand to
/// gigabytes) must end here, as an error, not in the allocator.
pub const MAX_PLAINTEXT: usize = super::MAX_DATA_SIZE;

/// Obfuscation nests a complete compressed object; borg never nests obfuscation in obfuscation,
/// and a crafted object must not recurse without bound.
const MAX_NESTING: usize = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CompressError {
    #[error("unknown compression header {0:02x}{1:02x}")]
    UnknownHeader(u8, u8),
    #[error("compressed object is empty (no compression header)")]
    Empty,
    #[error("{algorithm} data is corrupt: {detail}")]
    Corrupt {
        algorithm: &'static str,
        detail: String,
    },
    #[error("invalid compression spec {spec:?}: {reason}")]
    InvalidSpec { spec: String, reason: String },
    #[error(
        "{algorithm} data decompresses to more than {MAX_PLAINTEXT} bytes, more than any borg object holds"
    )]
    TooLarge { algorithm: &'static str },
}

fn corrupt(algorithm: &'static str, detail: impl fmt::Display) -> CompressError {
    CompressError::Corrupt {
        algorithm,
        detail: detail.to_string(),
    }
}

/// A compression setting as borg's `--compression` accepts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Lz4,
    Zstd(i32),
    Zlib(u32),
    /// Decoded always; encoding is not implemented (borg users rarely choose it and it is slow).
    Lzma(u32),
    Auto(Box<Compression>),
}

impl Default for Compression {
    /// Borg 1.4's default for `create`.
    fn default() -> Self {
        Compression::Lz4
    }
}

impl FromStr for Compression {
    type Err = CompressError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: &str| CompressError::InvalidSpec {
            spec: spec.to_string(),
            reason: reason.to_string(),
        };
        let (name, rest) = match spec.split_once(',') {
            Some((n, r)) => (n, Some(r)),
            None => (spec, None),
        };
        let level = |default: i64, min: i64, max: i64| -> Result<i64, CompressError> {
            match rest {
                None => Ok(default),
                Some(l) => match l.parse::<i64>() {
                    Ok(v) if (min..=max).contains(&v) => Ok(v),
                    _ => Err(invalid(&format!("level must be a number {min}..{max}"))),
                },
            }
        };
        match name {
            "none" | "lz4" if rest.is_some() => Err(invalid("takes no level")),
            "none" => Ok(Compression::None),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd(level(3, 1, 22)? as i32)),
            "zlib" => Ok(Compression::Zlib(level(6, 0, 9)? as u32)),
            "lzma" => Ok(Compression::Lzma(level(6, 0, 9)? as u32)),
            "auto" => match rest {
                Some(inner) => {
                    let inner: Compression = inner.parse()?;
                    if matches!(inner, Compression::Auto(_)) {
                        return Err(invalid("auto cannot be nested"));
                    }
                    Ok(Compression::Auto(Box::new(inner)))
                }
                None => Err(invalid("auto needs a compressor, e.g. auto,zstd")),
            },
            "obfuscate" => Err(invalid("writing obfuscated objects is not supported")),
            _ => Err(invalid(
                "unknown compressor (use none, lz4, zstd[,L], zlib[,L], auto,X)",
            )),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => write!(f, "none"),
            Compression::Lz4 => write!(f, "lz4"),
            Compression::Zstd(l) => write!(f, "zstd,{l}"),
            Compression::Zlib(l) => write!(f, "zlib,{l}"),
            Compression::Lzma(l) => write!(f, "lzma,{l}"),
            Compression::Auto(inner) => write!(f, "auto,{inner}"),
        }
    }
}

impl Compression {
    /// Refuses settings this client can read but not write, before any work starts.
    pub fn check_writable(&self) -> Result<(), CompressError> {
        match self {
            Compression::Lzma(_) => Err(CompressError::InvalidSpec {
                spec: self.to_string(),
                reason: "lzma is readable but not supported for writing; use zstd".into(),
            }),
            Compression::Auto(inner) => inner.check_writable(),
            _ => Ok(()),
        }
    }

    /// Compresses `data` into a payload with its header, exactly deciding as borg does.
    pub fn compress(&self, data: &[u8]) -> Vec<u8> {
        self.compress_reserving(data, 0)
    }

    /// [`Compression::compress`], with `headroom` bytes left free in front of the payload, so
    /// the envelope can be put around it without copying it (see `ObjectKey::seal_reserved`).
    pub fn compress_reserving(&self, data: &[u8], headroom: usize) -> Vec<u8> {
        match self {
            Compression::None => with_header(NONE, data, headroom),
            Compression::Lz4 => {
                let start = headroom + 2;
                let mut out =
                    vec![0u8; start + lz4_flex::block::get_maximum_output_size(data.len())];
                let (header, len) = match lz4_flex::block::compress_into(data, &mut out[start..]) {
                    Ok(len) if len < data.len() => (LZ4, len),
                    // Incompressible, like borg: stored as it is, in the same buffer (the
                    // bound is larger than the data), not a second one.
                    _ => {
                        out[start..start + data.len()].copy_from_slice(data);
                        (NONE, data.len())
                    }
                };
                out.truncate(start + len);
                out[headroom..start].copy_from_slice(&header);
                out
            }
            Compression::Zstd(level) => match zstd::bulk::compress(data, *level) {
                Ok(body) => smaller_or_none(ZSTD, body, data, headroom),
                // libzstd fails only on allocation failure; storing uncompressed is always valid.
                Err(_) => with_header(NONE, data, headroom),
            },
            Compression::Zlib(level) => {
                let mut enc = flate2::write::ZlibEncoder::new(
                    vec![0u8; headroom],
                    flate2::Compression::new(*level),
                );
                enc.write_all(data)
                    .and_then(|_| enc.finish())
                    .expect("zlib-encoding into a Vec cannot fail")
            }
            // check_writable() keeps lzma away from here; fall back to the valid `none` encoding.
            Compression::Lzma(_) => with_header(NONE, data, headroom),
            Compression::Auto(expensive) => {
                let cheap = Compression::Lz4.compress_reserving(data, headroom);
                let cheap_len = cheap.len() - headroom;
                if (cheap_len as f64) / ((data.len() + 2) as f64) >= 0.97 {
                    return cheap;
                }
                let better = expensive.compress_reserving(data, headroom);
                if ((better.len() - headroom) as f64) / (cheap_len as f64) < 0.99 {
                    better
                } else {
                    cheap
                }
            }
        }
    }
}

fn with_header(header: [u8; 2], body: &[u8], headroom: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(headroom + body.len() + 2);
    out.resize(headroom, 0);
    out.extend_from_slice(&header);
    out.extend_from_slice(body);
    out
}

fn smaller_or_none(header: [u8; 2], body: Vec<u8>, data: &[u8], headroom: usize) -> Vec<u8> {
    if body.len() < data.len() {
        with_header(header, &body, headroom)
    } else {
        with_header(NONE, data, headroom)
    }
}

/// Name of the compressor that produced `payload`, from its header (for `debug` and stats).
pub fn detect(payload: &[u8]) -> Result<&'static str, CompressError> {
    match payload {
        [] | [_] => Err(CompressError::Empty),
        [0x01, 0x00, ..] => Ok("lz4"),
        [0x03, 0x00, ..] => Ok("zstd"),
        [0x00, 0x00, ..] => Ok("none"),
        [a, b, ..] if is_zlib_header(*a, *b) => Ok("zlib"),
        [0x02, 0x00, ..] => Ok("lzma"),
        [0x04, 0x00, ..] => Ok("obfuscate"),
        [a, b, ..] => Err(CompressError::UnknownHeader(*a, *b)),
    }
}

/// Legacy zlib objects carry no borg header; borg recognises the zlib stream header instead.
fn is_zlib_header(cmf: u8, flg: u8) -> bool {
    cmf & 0x0f == 8 && (cmf as u32 * 256 + flg as u32).is_multiple_of(31)
}

/// Decompresses a payload of any compressor borg 1.x writes, to at most [`MAX_PLAINTEXT`] bytes.
/// `size_hint` (the plaintext size from a chunk list, when known) only pre-sizes buffers; it is
/// never trusted for correctness, nor above the cap.
pub fn decompress(payload: &[u8], size_hint: Option<usize>) -> Result<Vec<u8>, CompressError> {
    decompress_nested(payload, size_hint.filter(|&s| s <= MAX_PLAINTEXT), 0)
}

fn decompress_nested(
    payload: &[u8],
    size_hint: Option<usize>,
    depth: usize,
) -> Result<Vec<u8>, CompressError> {
    let body = payload.get(2..).unwrap_or_default();
    // What the input could plausibly expand to, as a first guess for the buffer.
    let guess = |input: &[u8]| size_hint.unwrap_or(input.len() * 3).min(MAX_PLAINTEXT);
    match detect(payload)? {
        "none" => Ok(body.to_vec()),
        "lz4" => decompress_lz4(body, size_hint),
        "zstd" => decompress_zstd(body),
        "zlib" => {
            let mut out = CappedWriter::new("zlib", guess(payload));
            std::io::copy(&mut flate2::read::ZlibDecoder::new(payload), &mut out)
                .map_err(|e| out.error(e))?;
            Ok(out.into_inner())
        }
        "lzma" => {
            // lzma-rs grows its dictionary with the output, so the cap bounds both.
            let mut out = CappedWriter::new("lzma", guess(body));
            let mut input = body;
            // borg writes .xz; Python's lzma.decompress also accepts the older .lzma-alone format.
            let result = if body.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
                lzma_rs::xz_decompress(&mut input, &mut out)
            } else {
                lzma_rs::lzma_decompress(&mut input, &mut out)
            };
            result.map_err(|e| match e {
                lzma_rs::error::Error::IoError(io) => out.error(io),
                other => corrupt("lzma", other),
            })?;
            Ok(out.into_inner())
        }
        "obfuscate" => {
            if depth >= MAX_NESTING {
                return Err(corrupt("obfuscate", "nested too deeply"));
            }
            let (len, rest) = body
                .split_first_chunk::<4>()
                .ok_or_else(|| corrupt("obfuscate", "missing length header"))?;
            let inner = rest
                .get(..u32::from_be_bytes(*len) as usize)
                .ok_or_else(|| corrupt("obfuscate", "length exceeds object"))?;
            decompress_nested(inner, size_hint, depth + 1)
        }
        _ => unreachable!("detect() returns only the names matched above"),
    }
}

/// A decompressor's output that refuses to grow past [`MAX_PLAINTEXT`]: the streaming
/// decompressors (zlib, lzma) cannot be told a limit themselves.
struct CappedWriter {
    algorithm: &'static str,
    out: Vec<u8>,
    overflowed: bool,
}

impl CappedWriter {
    fn new(algorithm: &'static str, capacity: usize) -> Self {
        CappedWriter {
            algorithm,
            out: Vec::with_capacity(capacity),
            overflowed: false,
        }
    }

    /// The error for a failed decompression: the cap if it was hit, else the data's fault.
    fn error(&self, e: impl fmt::Display) -> CompressError {
        if self.overflowed {
            CompressError::TooLarge {
                algorithm: self.algorithm,
            }
        } else {
            corrupt(self.algorithm, e)
        }
    }

    fn into_inner(self) -> Vec<u8> {
        self.out
    }
}

impl Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.out.len() + data.len() > MAX_PLAINTEXT {
            self.overflowed = true;
            return Err(std::io::Error::other("output over the cap"));
        }
        self.out.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn decompress_lz4(body: &[u8], size_hint: Option<usize>) -> Result<Vec<u8>, CompressError> {
    if let Some(size) = size_hint
        && let Ok(out) = lz4_flex::block::decompress(body, size)
        && out.len() == size
    {
        return Ok(out);
    }
    // Raw LZ4 blocks carry no size: grow the buffer as borg does until the block fits, up to
    // the cap (borg's own limit is 128 MiB, more than any object it writes).
    let mut capacity = ((1.1 * (1u64 << 23) as f64) as usize)
        .max(body.len() * 3)
        .min(MAX_PLAINTEXT);
    loop {
        let mut out = vec![0u8; capacity];
        match lz4_flex::block::decompress_into(body, &mut out) {
            Ok(n) => {
                out.truncate(n);
                return Ok(out);
            }
            Err(lz4_flex::block::DecompressError::OutputTooSmall { .. })
                if capacity < MAX_PLAINTEXT =>
            {
                capacity = (capacity * 3 / 2).min(MAX_PLAINTEXT);
            }
            Err(lz4_flex::block::DecompressError::OutputTooSmall { .. }) => {
                return Err(CompressError::TooLarge { algorithm: "lz4" });
            }
            Err(e) => return Err(corrupt("lz4", e)),
        }
    }
}

fn decompress_zstd(body: &[u8]) -> Result<Vec<u8>, CompressError> {
    // Like borg, refuse frames that do not state their size; it also bounds the allocation.
    let size = match zstd::zstd_safe::get_frame_content_size(body) {
        Ok(Some(size)) => size,
        Ok(None) => return Err(corrupt("zstd", "original size unknown")),
        Err(_) => return Err(corrupt("zstd", "invalid frame header")),
    };
    if size > MAX_PLAINTEXT as u64 {
        return Err(CompressError::TooLarge { algorithm: "zstd" });
    }
    let out = zstd::bulk::decompress(body, size as usize).map_err(|e| corrupt("zstd", e))?;
    if out.len() as u64 != size {
        return Err(corrupt("zstd", "size does not match the frame header"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| b"the quick brown fox "[i % 20])
            .collect::<Vec<_>>()
    }

    #[test]
    fn every_writable_compressor_round_trips() {
        for spec in [
            "none",
            "lz4",
            "zstd",
            "zstd,1",
            "zstd,22",
            "zlib",
            "zlib,0",
            "auto,zstd",
            "auto,zlib,9",
        ] {
            let c: Compression = spec.parse().unwrap();
            for data in [Vec::new(), b"x".to_vec(), text(100_000)] {
                let packed = c.compress(&data);
                assert_eq!(decompress(&packed, None).unwrap(), data, "{spec}");
            }
        }
    }

    #[test]
    fn headers_match_borg() {
        assert_eq!(&Compression::Lz4.compress(&text(1000))[..2], &LZ4);
        assert_eq!(
            &Compression::Zstd(3).compress(&text(1000))[..4],
            &[3, 0, 0x28, 0xb5]
        );
        assert_eq!(
            &Compression::Zlib(6).compress(&text(1000))[..2],
            &[0x78, 0x9c]
        );
        // Incompressible data is stored with the `none` header by lz4 and zstd.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        assert_eq!(&Compression::Lz4.compress(&noise)[..2], &NONE);
        assert_eq!(&Compression::Zstd(3).compress(&noise)[..2], &NONE);
        // ...after the headroom the envelope asked for, and whole.
        let reserved = Compression::Lz4.compress_reserving(&noise, 41);
        assert_eq!(reserved.len(), 41 + 2 + noise.len());
        assert_eq!(&reserved[41..43], &NONE);
        assert_eq!(decompress(&reserved[41..], None).unwrap(), noise);
    }

    #[test]
    fn specs_parse_like_borg() {
        assert_eq!("zstd".parse::<Compression>().unwrap(), Compression::Zstd(3));
        assert_eq!(
            "auto,zlib,9".parse::<Compression>().unwrap(),
            Compression::Auto(Box::new(Compression::Zlib(9)))
        );
        for bad in [
            "zstd,23",
            "zstd,x",
            "lz4,1",
            "auto",
            "auto,auto,lz4",
            "brotli",
            "",
        ] {
            assert!(bad.parse::<Compression>().is_err(), "{bad}");
        }
        assert!(
            "lzma,6"
                .parse::<Compression>()
                .unwrap()
                .check_writable()
                .is_err()
        );
    }

    #[test]
    fn bad_payloads_are_errors_not_panics() {
        assert_eq!(decompress(&[], None), Err(CompressError::Empty));
        assert_eq!(
            decompress(&[9, 9], None),
            Err(CompressError::UnknownHeader(9, 9))
        );
        assert!(decompress(&[1, 0, 0xff, 0xff], None).is_err());
        assert!(decompress(&[3, 0, 1, 2, 3], None).is_err());
        assert!(decompress(&[4, 0, 0, 0, 0, 9, 0, 0], None).is_err());
    }

    /// A payload of `header` + `body` for the borg-headed compressors.
    fn headed(header: [u8; 2], body: &[u8]) -> Vec<u8> {
        [&header[..], body].concat()
    }

    #[test]
    fn bombs_are_refused_at_the_cap() {
        let zeros = vec![0u8; 64 << 20];
        let too_large = |algorithm| Err(CompressError::TooLarge { algorithm });
        // zlib (legacy, headerless): 64 MiB of zeros is ~64 KiB.
        let zlib = Compression::Zlib(9).compress(&zeros);
        assert!(zlib.len() < 100 << 10);
        assert_eq!(decompress(&zlib, None), too_large("zlib"));
        // lzma, both container formats: ~10 KiB each.
        let xz = include_bytes!("../../testdata/bombs/zeros-64MiB.xz");
        assert_eq!(decompress(&headed([2, 0], xz), None), too_large("lzma"));
        let alone = include_bytes!("../../testdata/bombs/zeros-64MiB.lzma");
        assert_eq!(decompress(&headed([2, 0], alone), None), too_large("lzma"));
        // lz4 (no size in the block) and zstd (size in the frame header).
        let lz4 = lz4_flex::block::compress(&zeros);
        assert_eq!(decompress(&headed(LZ4, &lz4), None), too_large("lz4"));
        let zstd = zstd::bulk::compress(&zeros, 3).unwrap();
        assert_eq!(decompress(&headed(ZSTD, &zstd), None), too_large("zstd"));
        // A size hint from crafted metadata is not an allocation order.
        assert_eq!(
            decompress(&headed(LZ4, &lz4), Some(usize::MAX)),
            too_large("lz4")
        );
        assert_eq!(decompress(&zlib, Some(1 << 40)), too_large("zlib"));
    }

    #[test]
    fn the_largest_object_borg_writes_still_decompresses() {
        let largest = text(MAX_PLAINTEXT);
        for compression in [
            Compression::Lz4,
            Compression::Zstd(3),
            Compression::Zlib(6),
            Compression::None,
        ] {
            let packed = compression.compress(&largest);
            assert_eq!(
                decompress(&packed, None).as_ref(),
                Ok(&largest),
                "{compression}"
            );
        }
        let xz = headed([2, 0], &lzma_xz(&largest));
        assert_eq!(decompress(&xz, None).as_ref(), Ok(&largest));
        let one_more = text(MAX_PLAINTEXT + 1);
        let packed = Compression::Zlib(6).compress(&one_more);
        assert!(decompress(&packed, None).is_err());
    }

    fn lzma_xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lzma_rs::xz_compress(&mut &data[..], &mut out).unwrap();
        out
    }
}
