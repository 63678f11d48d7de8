//! Content-defined chunking exactly as borg 1.x cuts (`docs/borg-format.md` §5).
//!
//! Dedup between us and real borg only works if both cut a file at the same offsets, so this is a
//! bit-exact re-implementation of borg's buzhash chunker, not merely a similar one.
//!
//! The rule, for a chunk starting at offset `L` of a stream of `N` bytes: let `E = min(L + max, N)`.
//! Candidate cuts `c` run from `L + min` while `c + W < E`; the first whose hash of the window
//! `data[c .. c+W)` has the low `mask_bits` bits all zero ends the chunk at `c`. Without a match the
//! chunk is `[L, E)`. So a cut depends on `data[L..E)` alone, which is what makes the result
//! independent of read sizes. It also means a candidate can be decided as soon as its window has
//! arrived, so the streaming [`Chunker`] reads in small pieces and lets [`Buzhash::cut_partial`]
//! resume where it stopped, while the bytes are still in cache.
//!
//! Speed: borg rolls the hash byte by byte (`h' = rotl(h, 1) ^ rotl(T[out], W) ^ T[in]`: two table
//! lookups and a dependent rotate-xor chain per byte). Here every window hash is instead the xor of
//! two prefix values (the identity is derived on `Buzhash::first_match`), which costs one lookup,
//! one xor and one store per byte, plus a branch-free test pass that the compiler vectorizes. The
//! straightforward hash and roll are kept ([`Buzhash::hash`], [`Buzhash::roll`]) as the reference
//! the tests compare against.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use super::MAX_DATA_SIZE;
use super::msgpack::Value;

/// Borg's buzhash table (`table_base` in `_chunker.c`); a fact of the format.
#[rustfmt::skip]
const TABLE_BASE: [u32; 256] = [
    0xe7f831ec, 0xf4026465, 0xafb50cae, 0x6d553c7a, 0xd639efe3, 0x19a7b895, 0x9aba5b21, 0x5417d6d4,
    0x35fd2b84, 0xd1f6a159, 0x3f8e323f, 0xb419551c, 0xf444cebf, 0x21dc3b80, 0xde8d1e36, 0x84a32436,
    0xbeb35a9d, 0xa36f24aa, 0xa4e60186, 0x98d18ffe, 0x3f042f9e, 0xdb228bcd, 0x096474b7, 0x5c20c2f7,
    0xf9eec872, 0xe8625275, 0xb9d38f80, 0xd48eb716, 0x22a950b4, 0x3cbaaeaa, 0xc37cddd3, 0x8fea6f6a,
    0x1d55d526, 0x7fd6d3b3, 0xdaa072ee, 0x4345ac40, 0xa077c642, 0x8f2bd45b, 0x28509110, 0x55557613,
    0xffc17311, 0xd961ffef, 0xe532c287, 0xaab95937, 0x46d38365, 0xb065c703, 0xf2d91d0f, 0x92cd4bb0,
    0x4007c712, 0xf35509dd, 0x505b2f69, 0x557ead81, 0x310f4563, 0xbddc5be8, 0x9760f38c, 0x701e0205,
    0x00157244, 0x14912826, 0xdc4ca32b, 0x67b196de, 0x5db292e8, 0x8c1b406b, 0x01f34075, 0xfa2520f7,
    0x73bc37ab, 0x1e18bc30, 0xfe2c6cb3, 0x20c522d0, 0x5639e3db, 0x942bda35, 0x899af9d1, 0xced44035,
    0x98cc025b, 0x255f5771, 0x70fefa24, 0xe928fa4d, 0x2c030405, 0xb9325590, 0x20cb63bd, 0xa166305d,
    0x80e52c0a, 0xa8fafe2f, 0x1ad13f7d, 0xcfaf3685, 0x6c83a199, 0x7d26718a, 0xde5dfcd9, 0x79cf7355,
    0x8979d7fb, 0xebf8c55e, 0xebe408e4, 0xcd2affba, 0xe483be6e, 0xe239d6de, 0x5dc1e9e0, 0x0473931f,
    0x851b097c, 0xac5db249, 0x09c0f9f2, 0xd8d2f134, 0xe6f38e41, 0xb1c71bf1, 0x52b6e4db, 0x07224424,
    0x6cf73e85, 0x4f25d89c, 0x782a7d74, 0x10a68dcd, 0x3a868189, 0xd570d2dc, 0x69630745, 0x9542ed86,
    0x331cd6b2, 0xa84b5b28, 0x07879c9d, 0x38372f64, 0x7185db11, 0x25ba7c83, 0x01061523, 0xe6792f9f,
    0xe5df07d1, 0x4321b47f, 0x7d2469d8, 0x1a3a4f90, 0x48be29a3, 0x669071af, 0x8ec8dd31, 0x0810bfbf,
    0x813a06b4, 0x68538345, 0x65865ddc, 0x43a71b8e, 0x78619a56, 0x5a34451d, 0x5bdaa3ed, 0x71edc7e9,
    0x17ac9a20, 0x78d10bfa, 0x6c1e7f35, 0xd51839d9, 0x240cbc51, 0x33513cc1, 0xd2b4f795, 0xccaa8186,
    0x0babe682, 0xa33cf164, 0x18c643ea, 0xc1ca105f, 0x9959147a, 0x6d3d94de, 0x0b654fbe, 0xed902ca0,
    0x7d835cb5, 0x99ba1509, 0x6445c922, 0x495e76c2, 0xf07194bc, 0xa1631d7e, 0x677076a5, 0x89fffe35,
    0x1a49bcf3, 0x8e6c948a, 0x0144c917, 0x8d93aea1, 0x16f87ddf, 0xc8f25d49, 0x1fb11297, 0x27e750cd,
    0x2f422da1, 0xdee89a77, 0x1534c643, 0x457b7b8b, 0xaf172f7a, 0x6b9b09d6, 0x33573f7f, 0xf14e15c4,
    0x526467d5, 0xaf488241, 0x87c3ee0d, 0x33be490c, 0x95aa6e52, 0x43ec242e, 0xd77de99b, 0xd018334f,
    0x5b78d407, 0x498eb66b, 0xb1279fa8, 0xb38b0ea6, 0x90718376, 0xe325dee2, 0x8e2f2cba, 0xcaa5bdec,
    0x9d652c56, 0xad68f5cb, 0xa77591af, 0x88e37ee8, 0xf8faa221, 0xfcbbbe47, 0x4f407786, 0xaf393889,
    0xf444a1d9, 0x15ae1a2f, 0x40aa7097, 0x6f9486ac, 0x29d232a3, 0xe47609e9, 0xe8b631ff, 0xba8565f4,
    0x11288749, 0x46c9a838, 0xeb1b7cd8, 0xf516bbb1, 0xfb74fda0, 0x010996e6, 0x4c994653, 0x1d889512,
    0x53dcd9a3, 0xdd074697, 0x1e78e17c, 0x637c98bf, 0x930bb219, 0xcf7f75b0, 0xcb9355fb, 0x9e623009,
    0xe466d82c, 0x28f968d3, 0xfeb385d9, 0x238e026c, 0xb8ed0560, 0x0c6a027a, 0x3d6fec4b, 0xbb4b2ec2,
    0xe715031c, 0xeded011d, 0xcdc4d3b9, 0xc456fc96, 0xdd0eea20, 0xb3df8ec9, 0x12351993, 0xd9cbb01c,
    0x603147a2, 0xcf37d17d, 0xf7fcd9dc, 0xd8556fa3, 0x104c8131, 0x13152774, 0xb4715811, 0x6a72c2c9,
    0xc5ae37bb, 0xa76ce12a, 0x8150d8f3, 0x2ec29218, 0xa35f0984, 0x48c0647e, 0x0b5ff98c, 0x71893f7b,
];

/// Chunker parameters as borg stores them in an archive's `chunker_params`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkerParams {
    Buzhash {
        min_exp: u32,
        max_exp: u32,
        mask_bits: u32,
        window: u32,
    },
    Fixed {
        block: u32,
        header: u32,
    },
}

impl ChunkerParams {
    /// Borg's `CHUNKER_PARAMS`, for file contents.
    pub const DEFAULT: ChunkerParams = ChunkerParams::Buzhash {
        min_exp: 19,
        max_exp: 23,
        mask_bits: 21,
        window: 4095,
    };

    /// Borg's `ITEMS_CHUNKER_PARAMS`, for the item metadata stream.
    pub const ITEMS: ChunkerParams = ChunkerParams::Buzhash {
        min_exp: 15,
        max_exp: 19,
        mask_bits: 17,
        window: 4095,
    };

    /// The parameters as an archive's `chunker_params` holds them: `["buzhash", MIN, MAX,
    /// MASK, WINDOW]` or `["fixed", BLOCK, HEADER]`.
    pub fn to_value(self) -> Value {
        let int = |n: u32| Value::Int(n.into());
        match self {
            ChunkerParams::Buzhash {
                min_exp,
                max_exp,
                mask_bits,
                window,
            } => Value::Array(vec![
                Value::raw("buzhash"),
                int(min_exp),
                int(max_exp),
                int(mask_bits),
                int(window),
            ]),
            ChunkerParams::Fixed { block, header } => {
                Value::Array(vec![Value::raw("fixed"), int(block), int(header)])
            }
        }
    }

    /// The largest chunk these parameters can produce.
    pub fn max_chunk_size(&self) -> usize {
        match *self {
            ChunkerParams::Buzhash { max_exp, .. } => 1 << max_exp,
            ChunkerParams::Fixed { block, header } => block.max(header) as usize,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid chunker params {spec:?}: {reason}")]
pub struct InvalidChunkerParams {
    spec: String,
    reason: &'static str,
}

impl FromStr for ChunkerParams {
    type Err = InvalidChunkerParams;

    /// Accepts what `borg create --chunker-params` accepts: `default`, `buzhash,MIN,MAX,MASK,WINDOW`,
    /// the old `MIN,MAX,MASK,WINDOW`, and `fixed,BLOCK[,HEADER]`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidChunkerParams {
            spec: spec.to_string(),
            reason,
        };
        let parts: Vec<&str> = spec.trim().split(',').collect();
        let numbers = |items: &[&str]| -> Result<Vec<u32>, InvalidChunkerParams> {
            items
                .iter()
                .map(|p| {
                    p.trim()
                        .parse::<u32>()
                        .map_err(|_| invalid("parameters must be numbers"))
                })
                .collect()
        };
        let algorithm = parts[0].to_ascii_lowercase();
        match (algorithm.as_str(), parts.len()) {
            ("default", 1) => Ok(ChunkerParams::DEFAULT),
            ("fixed", 2 | 3) => {
                let n = numbers(&parts[1..])?;
                let (block, header) = (n[0], n.get(1).copied().unwrap_or(0));
                if block < 64 {
                    return Err(invalid("block size must be at least 64 bytes"));
                }
                if block as usize > MAX_DATA_SIZE || header as usize > MAX_DATA_SIZE {
                    return Err(invalid("block and header size must not exceed 20971479"));
                }
                Ok(ChunkerParams::Fixed { block, header })
            }
            ("buzhash", 5) | (_, 4) => {
                let n = numbers(&parts[parts.len() - 4..])?;
                let (min_exp, max_exp, mask_bits, window) = (n[0], n[1], n[2], n[3]);
                if !(min_exp <= mask_bits && mask_bits <= max_exp) {
                    return Err(invalid("required: chunk_min <= chunk_mask <= chunk_max"));
                }
                if min_exp < 6 {
                    return Err(invalid("min. chunk size exponent must be at least 6"));
                }
                if max_exp > 23 {
                    return Err(invalid("max. chunk size exponent must be at most 23"));
                }
                if window % 2 == 0 {
                    return Err(invalid("window size must be odd"));
                }
                if window as u64 + (1u64 << min_exp) + 1 > 1u64 << max_exp {
                    return Err(invalid("window + min size must be smaller than max size"));
                }
                Ok(ChunkerParams::Buzhash {
                    min_exp,
                    max_exp,
                    mask_bits,
                    window,
                })
            }
            _ => Err(invalid(
                "expected buzhash,MIN,MAX,MASK,WINDOW or fixed,BLOCK[,HEADER]",
            )),
        }
    }
}

impl fmt::Display for ChunkerParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkerParams::Buzhash {
                min_exp,
                max_exp,
                mask_bits,
                window,
            } => write!(f, "buzhash,{min_exp},{max_exp},{mask_bits},{window}"),
            ChunkerParams::Fixed { block, header } => write!(f, "fixed,{block},{header}"),
        }
    }
}

/// The seeded buzhash cut finder: pure, over one in-memory span.
#[derive(Clone)]
pub struct Buzhash {
    table: [u32; 256],
    /// `rotl(table[b], window)`: the contribution of the byte leaving the window.
    table_out: [u32; 256],
    window: usize,
    min: usize,
    max: usize,
    mask: u32,
    /// `rotated[j][b] = rotr(table[b], j)`: the position-rotated table values of
    /// [`Buzhash::first_match`], looked up instead of rotated (32 KiB).
    rotated: Box<[[u32; 256]; 32]>,
    /// Scratch space of [`Buzhash::first_match`], kept to avoid reallocating per chunk.
    prefix: Vec<u32>,
    /// Where an unfinished scan of the current chunk stands: `prefix[..scan_filled]` holds
    /// `S_{scan_base ..}`; 0 means no scan in progress.
    scan_base: usize,
    scan_filled: usize,
    /// Candidates below this were tested and did not match.
    scan_tested: usize,
    /// Whether this CPU has AVX2 (checked once, here, rather than per block).
    #[cfg(target_arch = "x86_64")]
    avx2: bool,
}

impl Buzhash {
    /// `seed` is the key's `chunk_seed` (0 for `none`); it is xored into every table entry.
    pub fn new(min_exp: u32, max_exp: u32, mask_bits: u32, window: u32, seed: i32) -> Self {
        let table = TABLE_BASE.map(|t| t ^ seed as u32);
        Buzhash {
            table,
            table_out: table.map(|t| t.rotate_left(window)),
            window: window as usize,
            min: 1 << min_exp,
            max: 1 << max_exp,
            mask: (1u32 << mask_bits) - 1,
            rotated: Box::new(std::array::from_fn(|j| {
                table.map(|t| t.rotate_right(j as u32))
            })),
            prefix: Vec::new(),
            scan_base: 0,
            scan_filled: 0,
            scan_tested: 0,
            #[cfg(target_arch = "x86_64")]
            avx2: std::arch::is_x86_feature_detected!("avx2"),
        }
    }

    /// The hash of one window, computed from scratch.
    pub fn hash(&self, window: &[u8]) -> u32 {
        let n = window.len() as u32;
        window.iter().enumerate().fold(0u32, |h, (k, &b)| {
            h ^ self.table[b as usize].rotate_left((n - 1 - k as u32) % 32)
        })
    }

    /// One rolling step: drop `out`, append `inp`.
    #[inline(always)]
    pub fn roll(&self, h: u32, out: u8, inp: u8) -> u32 {
        h.rotate_left(1) ^ self.table_out[out as usize] ^ self.table[inp as usize]
    }

    pub fn max_size(&self) -> usize {
        self.max
    }

    /// Length of the chunk starting at `data[0]`, where `data` holds exactly `min(max, rest of the
    /// stream)` bytes. Never returns 0 for non-empty input.
    pub fn cut(&mut self, data: &[u8]) -> usize {
        self.restart();
        self.cut_partial(data, true)
            .expect("a complete span always yields a cut")
    }

    /// Like [`Buzhash::cut`] for a chunk whose bytes arrive in pieces: `data` is what is there so
    /// far from the chunk start, `complete` says that no more will come before `max` bytes (end
    /// of stream). Returns `None` while the cut cannot be decided yet; work already done on the
    /// same chunk is not repeated. A decided cut ends the scan; [`Buzhash::restart`] drops an
    /// undecided one.
    pub fn cut_partial(&mut self, data: &[u8], complete: bool) -> Option<usize> {
        let complete = complete || data.len() >= self.max;
        let end = data.len().min(self.max);
        let w = self.window;
        let first = self.min;
        let found = if end < first + w + 1 {
            None
        } else {
            // Candidates c = min ..= end - W - 1; their windows only reach byte end - 2. With
            // more data still to come the same ones are decidable, since the stream end lies
            // beyond `end`.
            self.first_match(&data[first..end - 1], end - w - first)
                .map(|k| first + k)
        };
        let cut = found.or(complete.then_some(end));
        if cut.is_some() {
            self.restart();
        }
        cut
    }

    /// Forgets the scan of the previous chunk.
    pub fn restart(&mut self) {
        self.scan_filled = 0;
    }

    /// The first `k < candidates` whose window `bytes[k .. k+W)` hashes to zero under the mask.
    ///
    /// Instead of rolling the hash byte by byte, this uses an identity that turns every window
    /// hash into the xor of two prefix values. With `u_i = rotr(T[bytes[i]], i)` and the prefix
    /// xor `S_j = u_0 ^ … ^ u_{j-1}`:
    ///
    /// ```text
    /// hash(bytes[k .. k+W)) = rotl(S_k ^ S_{k+W}, k + W - 1)      (rotations mod 32)
    /// ```
    ///
    /// (rotating the window hash right by `k + W - 1` gives each byte `i` of the window the
    /// rotation `i`, independent of the window). So one pass costs a single table lookup per
    /// byte — the rolling update needs two — and the test pass is plain, branch-free arithmetic
    /// on arrays that the compiler vectorizes. Work goes in blocks so the prefix array stays in
    /// cache, and stops at the first match, like borg.
    ///
    /// Resumable: between calls for the same chunk with more candidates, the prefix values, the
    /// block position and the candidates already tested are kept, so nothing is done twice
    /// (beyond re-testing up to 31 candidates to stay aligned to groups of 32).
    fn first_match(&mut self, bytes: &[u8], candidates: usize) -> Option<usize> {
        let w = self.window;
        // prefix[x] = S_{base + x} for x < filled; S_0 = 0. Sized once: refilling it must not
        // pay for zeroing it first.
        let mut prefix = std::mem::take(&mut self.prefix);
        let (mut base, mut filled, mut tested) =
            (self.scan_base, self.scan_filled, self.scan_tested);
        if filled == 0 {
            prefix.resize(BLOCK + w + 1, 0);
            prefix[0] = 0;
            (base, filled, tested) = (0, 1, 0);
        }
        let found = loop {
            let block_end = (base + BLOCK).min(candidates);
            let have = base + filled - 1;
            let need = block_end - 1 + w;
            if need > have {
                let new = &mut prefix[filled - 1..=need - base];
                self.extend_prefix(new, &bytes[have..need], have);
                filled = need - base + 1;
            }
            if let Some(k) = self.test_block(&prefix[..filled], base, tested, block_end) {
                break Some(k);
            }
            tested = block_end;
            if block_end == candidates {
                break None;
            }
            // Keep what the next block needs: S_{block_end} onwards.
            prefix.copy_within(block_end - base..filled, 0);
            filled -= block_end - base;
            base = block_end;
        };
        (self.scan_base, self.scan_filled, self.scan_tested) = (base, filled, tested);
        self.prefix = prefix;
        found
    }

    /// Fills `out[1..]` with `S_{j+1} = S_j ^ rotr(T[b], j)` for the bytes `b` at positions
    /// `j = start ..`, where `out[0]` already holds `S_start`.
    // Kept out of line, like `test_block`, so that profiles show the two passes apart.
    #[inline(never)]
    fn extend_prefix(&self, out: &mut [u32], bytes: &[u8], start: usize) {
        let mut acc = out[0];
        let out = &mut out[1..];
        // Up to the next multiple of 32, then whole groups of 32 with constant rotations.
        let head = ((32 - start % 32) % 32).min(bytes.len());
        for (i, (&b, o)) in bytes[..head].iter().zip(&mut out[..head]).enumerate() {
            acc ^= self.rotated[(start + i) % 32][b as usize];
            *o = acc;
        }
        let groups = bytes[head..]
            .chunks_exact(32)
            .zip(out[head..].chunks_exact_mut(32));
        for (group, o) in groups {
            macro_rules! steps {
                ($($j:literal)*) => {$(
                    acc ^= self.rotated[$j][group[$j] as usize];
                    o[$j] = acc;
                )*};
            }
            steps!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31);
        }
        let done = head + (bytes.len() - head) / 32 * 32;
        for (i, (&b, o)) in bytes[done..].iter().zip(&mut out[done..]).enumerate() {
            acc ^= self.rotated[(start + done + i) % 32][b as usize];
            *o = acc;
        }
    }

    /// Tests the candidates `from .. block_end` (`base` is a multiple of 32, `from >= base`);
    /// `prefix[x]` is `S_{base + x}`. Uses AVX2 where the CPU has it: the same code, vectorized
    /// 8 lanes wide instead of SSE2's 4.
    #[inline(never)]
    fn test_block(
        &self,
        prefix: &[u32],
        base: usize,
        from: usize,
        block_end: usize,
    ) -> Option<usize> {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `avx2` is set only when the running CPU reports AVX2 (see `Buzhash::new`),
            // which is the one requirement of calling a `target_feature(enable = "avx2")` fn.
            return unsafe { self.test_block_avx2(prefix, base, from, block_end) };
        }
        self.test_block_portable(prefix, base, from, block_end)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn test_block_avx2(
        &self,
        prefix: &[u32],
        base: usize,
        from: usize,
        block_end: usize,
    ) -> Option<usize> {
        self.test_block_portable(prefix, base, from, block_end)
    }

    #[inline(always)]
    fn test_block_portable(
        &self,
        prefix: &[u32],
        base: usize,
        from: usize,
        block_end: usize,
    ) -> Option<usize> {
        let w = self.window;
        // The test `rotl(K, k + W - 1) & mask == 0` as `K & rotr(mask, k + W - 1) == 0`.
        let masks: [u32; 32] =
            std::array::from_fn(|j| self.mask.rotate_right(((j + w - 1) % 32) as u32));
        let count = block_end - base;
        let skip = (from.max(base) - base) / 32 * 32;
        let lows = prefix[skip..count].chunks_exact(32);
        let highs = prefix[skip + w..w + count].chunks_exact(32);
        for (g, (low, high)) in lows.zip(highs).enumerate() {
            // Branch-free over the whole group, so it vectorizes; exact position only on a hit.
            let hits = low
                .iter()
                .zip(high)
                .zip(&masks)
                .fold(0u32, |acc, ((l, h), m)| acc | ((l ^ h) & m == 0) as u32);
            if hits != 0
                && let Some(j) = (0..32).find(|&j| (low[j] ^ high[j]) & masks[j] == 0)
            {
                return Some(base + skip + g * 32 + j);
            }
        }
        let done = skip + (count - skip) / 32 * 32;
        (done..count)
            .find(|&x| (prefix[x] ^ prefix[x + w]) & masks[x % 32] == 0)
            .map(|x| base + x)
    }
}

/// Candidate positions per block of [`Buzhash::first_match`]: the prefix array (4 bytes per
/// position, plus the window) stays within a typical L2 cache.
const BLOCK: usize = 1 << 15;

/// Streams chunks out of a reader with bounded memory: at most a few times the max chunk size.
pub struct Chunker {
    cutter: Cutter,
    buffer: Vec<u8>,
    /// Start of the next chunk in `buffer`.
    start: usize,
    /// End of the valid data in `buffer`.
    end: usize,
    eof: bool,
}

#[derive(Clone)]
enum Cutter {
    Buzhash(Box<Buzhash>),
    Fixed {
        block: usize,
        header: usize,
        header_done: bool,
    },
}

impl Cutter {
    /// The cut for the bytes that are there from the chunk start, if it can be decided yet;
    /// `complete`: the stream ends within them.
    fn cut(&mut self, data: &[u8], complete: bool) -> Option<usize> {
        match self {
            Cutter::Buzhash(b) => b.cut_partial(data, complete),
            Cutter::Fixed {
                block,
                header,
                header_done,
            } => {
                let size = if *header_done || *header == 0 {
                    *block
                } else {
                    *header
                };
                if data.len() < size && !complete {
                    return None;
                }
                *header_done = true;
                Some(size.min(data.len()))
            }
        }
    }

    fn lookahead(&self) -> usize {
        match self {
            Cutter::Buzhash(b) => b.max_size(),
            Cutter::Fixed { block, header, .. } => (*block).max(*header),
        }
    }

    fn restart(&mut self) {
        if let Cutter::Buzhash(b) = self {
            b.restart();
        }
    }
}

/// Bytes asked for per read: small enough that the cutter finds them still in cache.
const READ_SIZE: usize = 256 << 10;

/// A buffer larger than this is not kept for the next stream.
const RETAINED: usize = 4 * READ_SIZE;

impl Chunker {
    pub fn new(params: ChunkerParams, seed: i32) -> Self {
        let cutter = match params {
            ChunkerParams::Buzhash {
                min_exp,
                max_exp,
                mask_bits,
                window,
            } => Cutter::Buzhash(Box::new(Buzhash::new(
                min_exp, max_exp, mask_bits, window, seed,
            ))),
            ChunkerParams::Fixed { block, header } => Cutter::Fixed {
                block: block as usize,
                header: header as usize,
                header_done: false,
            },
        };
        Chunker {
            cutter,
            buffer: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// Forgets the previous stream, keeping the buffer for reuse.
    pub fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
        self.eof = false;
        // A large file's buffer is given back: the mails after it need a fraction of it.
        if self.buffer.len() > RETAINED {
            self.buffer = Vec::new();
        }
        if let Cutter::Fixed { header_done, .. } = &mut self.cutter {
            *header_done = false;
        }
    }

    /// The next chunk of `reader`'s stream, or `None` at its end. Call [`Chunker::reset`] before
    /// starting another stream.
    pub fn next_chunk<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<Option<&[u8]>> {
        // Read in modest pieces and let the cutter work on each as it arrives, while the bytes
        // are still in cache, instead of reading a whole max-size lookahead first.
        self.cutter.restart();
        let len = loop {
            if self.start == self.end && self.eof {
                return Ok(None);
            }
            if let Some(len) = self
                .cutter
                .cut(&self.buffer[self.start..self.end], self.eof)
            {
                break len;
            }
            self.fill(reader)?;
        };
        let chunk = &self.buffer[self.start..self.start + len];
        self.start += len;
        Ok(Some(chunk))
    }

    fn fill<R: Read + ?Sized>(&mut self, reader: &mut R) -> io::Result<()> {
        if self.buffer.len() - self.end < READ_SIZE {
            self.make_room();
        }
        loop {
            match reader.read(&mut self.buffer[self.end..self.end + READ_SIZE]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Room for one more read at the end of the buffer. The buffer grows only as a stream
    /// needs it (a mail needs a few hundred KiB, a large attachment up to twice the lookahead),
    /// and pending bytes are moved to the front only once at least as many were consumed, so
    /// every byte is moved at most once on average. Pending bytes never reach the lookahead
    /// (the cutter decides by then), so `2 × lookahead + READ_SIZE` is as large as it gets.
    fn make_room(&mut self) {
        let pending = self.end - self.start;
        if self.start >= pending && self.buffer.len() - pending >= READ_SIZE {
            self.buffer.copy_within(self.start..self.end, 0);
        } else {
            let largest = 2 * self.cutter.lookahead() + READ_SIZE;
            let capacity = (2 * self.buffer.len())
                .max(pending + 2 * READ_SIZE)
                .min(largest);
            // A fresh zeroed allocation of this size comes from the OS already zeroed (no
            // memset); only the pending bytes move over.
            let mut bigger = vec![0u8; capacity];
            bigger[..pending].copy_from_slice(&self.buffer[self.start..self.end]);
            self.buffer = bigger;
        }
        self.end = pending;
        self.start = 0;
    }
}

/// Chunk sizes of an in-memory buffer (for the item stream, tests and `debug chunk`).
pub fn chunk_sizes(params: ChunkerParams, seed: i32, data: &[u8]) -> Vec<usize> {
    let mut chunker = Chunker::new(params, seed);
    let mut reader = data;
    let mut sizes = Vec::new();
    while let Some(chunk) = chunker
        .next_chunk(&mut reader)
        .expect("reading from a slice cannot fail")
    {
        sizes.push(chunk.len());
    }
    sizes
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// The buffer of `docs/borg-format.md` §5.5: SHA-256(u64_le(i)) for i = 0, 1, …, truncated to
    /// `len`.
    fn spec_buffer(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 32);
        let mut i = 0u64;
        while out.len() < len {
            out.extend_from_slice(&Sha256::digest(i.to_le_bytes()));
            i += 1;
        }
        out.truncate(len);
        out
    }

    #[test]
    fn table_matches_borg() {
        let bytes: Vec<u8> = TABLE_BASE.iter().flat_map(|t| t.to_le_bytes()).collect();
        assert_eq!(
            crate::format::key::hex(&Sha256::digest(&bytes)),
            "52bbc3f13bb34a5f5b19988dce11f5adb9cc0868a29e987f4c8d2901c722e6db"
        );
    }

    #[test]
    fn hash_and_roll_vectors() {
        let buf = spec_buffer(4096);
        for (seed, full, rolled) in [
            (0, 0xe83c650b, 0x18ba07f6),
            (1314442734, 0xcf1003fc, 0x3f966101),
            (-12345, 0x17c382e8, 0xe745e015),
        ] {
            let b = Buzhash::new(19, 23, 21, 4095, seed);
            let h = b.hash(&buf[0..4095]);
            assert_eq!(h, full, "seed {seed}");
            assert_eq!(b.roll(h, buf[0], buf[4095]), rolled, "seed {seed}");
            assert_eq!(b.hash(&buf[1..4096]), rolled, "seed {seed}");
        }
        assert_eq!(Buzhash::new(19, 23, 21, 4095, 0).hash(b"a"), 0xac5db249);
    }

    #[test]
    fn spec_chunk_size_vectors() {
        let buf = spec_buffer(20 * 1024 * 1024);
        let cases: [(i32, &[usize]); 3] = [
            (
                0,
                &[
                    2814462, 6773601, 1675165, 2865529, 784642, 3049062, 763859, 572080, 998551,
                    674569,
                ],
            ),
            (
                1314442734,
                &[
                    528501, 955285, 567475, 2959811, 3163116, 1729610, 2328698, 805619, 7933405,
                ],
            ),
            (
                -12345,
                &[
                    2458091, 990738, 1970430, 1844785, 3460953, 1102427, 739368, 1062813, 4844476,
                    2497439,
                ],
            ),
        ];
        for (seed, expected) in cases {
            assert_eq!(
                chunk_sizes(ChunkerParams::DEFAULT, seed, &buf),
                expected,
                "seed {seed}"
            );
        }
        let items = chunk_sizes(ChunkerParams::ITEMS, 0, &buf);
        assert_eq!(
            &items[..12],
            &[
                67998, 40802, 122605, 33498, 55735, 172799, 343238, 167509, 88947, 102934, 273990,
                524288
            ]
        );
    }

    /// The cut rule of `docs/borg-format.md` §5.2, literally: hash the first window, roll, test
    /// each candidate.
    fn reference_cut(b: &Buzhash, data: &[u8]) -> usize {
        let end = data.len().min(b.max);
        if end < b.min + b.window + 1 {
            return end;
        }
        let mut h = b.hash(&data[b.min..b.min + b.window]);
        let mut c = b.min;
        loop {
            if h & b.mask == 0 {
                return c;
            }
            if c + b.window + 1 >= end {
                return end;
            }
            h = b.roll(h, data[c], data[c + b.window]);
            c += 1;
        }
    }

    #[test]
    fn fast_cut_equals_the_literal_rule() {
        let noise = spec_buffer(1 << 20);
        for (params, seeds) in [
            ((6, 10, 7, 31), 40),
            ((8, 14, 9, 63), 20),
            ((12, 18, 14, 4095), 5),
        ] {
            let (min_exp, max_exp, mask_bits, window) = params;
            for (seed, portable) in (0..seeds).flat_map(|s| [(s, false), (s, true)]) {
                let mut b = Buzhash::new(min_exp, max_exp, mask_bits, window, seed * 7919 - 100);
                // Exercise the SSE2 build of the test pass too, not only the AVX2 one.
                #[cfg(target_arch = "x86_64")]
                if portable {
                    b.avx2 = false;
                }
                let mut pos = 0;
                while pos < noise.len() {
                    let span = &noise[pos..(pos + b.max).min(noise.len())];
                    let len = b.cut(span);
                    assert_eq!(
                        len,
                        reference_cut(&b, span),
                        "{params:?} seed {seed} at {pos}"
                    );
                    pos += len;
                }
            }
        }
    }

    /// A reader that hands out data in pieces of the given sizes, cycling.
    struct Trickle<'a> {
        data: &'a [u8],
        sizes: &'a [usize],
        n: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let size = self.sizes[self.n % self.sizes.len()]
                .min(buf.len())
                .min(self.data.len());
            self.n += 1;
            buf[..size].copy_from_slice(&self.data[..size]);
            self.data = &self.data[size..];
            Ok(size)
        }
    }

    #[test]
    fn cut_points_do_not_depend_on_read_sizes() {
        let buf = spec_buffer(3 << 20);
        let params: ChunkerParams = "buzhash,10,16,12,4095".parse().unwrap();
        let expected = chunk_sizes(params, 77, &buf);
        for sizes in [&[1usize][..], &[7, 4096, 13], &[65536], &[1 << 20, 3]] {
            let mut chunker = Chunker::new(params, 77);
            let mut reader = Trickle {
                data: &buf[..],
                sizes,
                n: 0,
            };
            let mut got = Vec::new();
            while let Some(c) = chunker.next_chunk(&mut reader).unwrap() {
                got.push(c.len());
            }
            assert_eq!(got, expected, "read sizes {sizes:?}");
        }
    }

    #[test]
    fn a_chunker_reused_after_a_large_stream_cuts_like_a_fresh_one() {
        let params: ChunkerParams = "buzhash,19,23,21,4095".parse().unwrap();
        let (large, small) = (spec_buffer(20 << 20), spec_buffer(300_000));
        let mut chunker = Chunker::new(params, -3);
        for data in [&small, &large, &small, &large] {
            chunker.reset();
            let mut reader = &data[..];
            let mut got = Vec::new();
            while let Some(c) = chunker.next_chunk(&mut reader).unwrap() {
                got.push(c.len());
            }
            assert_eq!(got, chunk_sizes(params, -3, data));
            assert!(chunker.buffer.len() <= 2 * (1 << 23) + READ_SIZE);
        }
        // The large stream's buffer is not kept for the next one.
        chunker.reset();
        assert!(chunker.buffer.len() <= RETAINED);
    }

    #[test]
    fn fixed_chunker_with_header() {
        let params: ChunkerParams = "fixed,4096,100".parse().unwrap();
        assert_eq!(
            chunk_sizes(params, 0, &[1u8; 10000]),
            vec![100, 4096, 4096, 1708]
        );
        assert_eq!(chunk_sizes(params, 0, &[]), Vec::<usize>::new());
        let no_header: ChunkerParams = "fixed,4096".parse().unwrap();
        assert_eq!(chunk_sizes(no_header, 0, &[1u8; 8192]), vec![4096, 4096]);
    }

    #[test]
    fn params_parse_like_borg() {
        assert_eq!(
            "default".parse::<ChunkerParams>().unwrap(),
            ChunkerParams::DEFAULT
        );
        assert_eq!(
            "19,23,21,4095".parse::<ChunkerParams>().unwrap(),
            ChunkerParams::DEFAULT
        );
        assert_eq!(ChunkerParams::DEFAULT.to_string(), "buzhash,19,23,21,4095");
        for bad in [
            "buzhash,19,23,24,4095",
            "buzhash,5,10,8,31",
            "buzhash,19,24,21,4095",
            "buzhash,10,16,12,4096",
            "fixed,10",
            "fixed,x",
            "rabin,1,2,3,4",
            "buzhash,12,12,12,4095",
        ] {
            assert!(bad.parse::<ChunkerParams>().is_err(), "{bad}");
        }
    }
}
