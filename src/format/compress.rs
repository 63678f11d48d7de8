//! Borg's compression layer (spec §4).
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
use std::io::{Read, Write};
use std::str::FromStr;

const NONE: [u8; 2] = [0x00, 0x00];
const LZ4: [u8; 2] = [0x01, 0x00];
const ZSTD: [u8; 2] = [0x03, 0x00];

/// Borg grows its LZ4 output buffer up to this size before giving up (compress.pyx).
const LZ4_MAX_OUTPUT: usize = 1 << 27;

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

/// Decompresses a payload of any compressor borg 1.x writes. `size_hint` (the plaintext size from
/// a chunk list, when known) only pre-sizes buffers; it is never trusted for correctness.
pub fn decompress(payload: &[u8], size_hint: Option<usize>) -> Result<Vec<u8>, CompressError> {
    decompress_nested(payload, size_hint, 0)
}

fn decompress_nested(
    payload: &[u8],
    size_hint: Option<usize>,
    depth: usize,
) -> Result<Vec<u8>, CompressError> {
    let body = payload.get(2..).unwrap_or_default();
    match detect(payload)? {
        "none" => Ok(body.to_vec()),
        "lz4" => decompress_lz4(body, size_hint),
        "zstd" => decompress_zstd(body),
        "zlib" => {
            let mut out = Vec::with_capacity(size_hint.unwrap_or(payload.len() * 3));
            flate2::read::ZlibDecoder::new(payload)
                .read_to_end(&mut out)
                .map_err(|e| corrupt("zlib", e))?;
            Ok(out)
        }
        "lzma" => {
            let mut out = Vec::with_capacity(size_hint.unwrap_or(body.len() * 3));
            let mut input = body;
            // borg writes .xz; Python's lzma.decompress also accepts the older .lzma-alone format.
            if body.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
                lzma_rs::xz_decompress(&mut input, &mut out).map_err(|e| corrupt("lzma", e))?;
            } else {
                lzma_rs::lzma_decompress(&mut input, &mut out).map_err(|e| corrupt("lzma", e))?;
            }
            Ok(out)
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

fn decompress_lz4(body: &[u8], size_hint: Option<usize>) -> Result<Vec<u8>, CompressError> {
    if let Some(size) = size_hint
        && let Ok(out) = lz4_flex::block::decompress(body, size)
        && out.len() == size
    {
        return Ok(out);
    }
    // Raw LZ4 blocks carry no size: grow the buffer as borg does until the block fits.
    let mut capacity = ((1.1 * (1u64 << 23) as f64) as usize).max(body.len() * 3);
    loop {
        let mut out = vec![0u8; capacity];
        match lz4_flex::block::decompress_into(body, &mut out) {
            Ok(n) => {
                out.truncate(n);
                return Ok(out);
            }
            Err(lz4_flex::block::DecompressError::OutputTooSmall { .. })
                if capacity <= LZ4_MAX_OUTPUT =>
            {
                capacity = capacity * 3 / 2;
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
    if size > crate::format::MAX_DATA_SIZE as u64 * 8 {
        return Err(corrupt("zstd", format!("implausible content size {size}")));
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
}
