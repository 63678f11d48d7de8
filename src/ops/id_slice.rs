//! A slice of the object id space, for checks that verify part of a repository per run.
//!
//! Object ids are keyed hashes (HMAC-SHA256 or BLAKE2b of the plaintext), so their first four
//! bytes are uniform: the ids whose prefix falls in a slice of the 2³² prefixes are about that
//! share of the objects, whatever the repository holds.

/// The ids whose first four bytes, read big-endian, are in `start .. start + len`, wrapping
/// at 2³².
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdSlice {
    start: u32,
    /// 1 ..= 2³².
    len: u64,
}

const SPACE: u64 = 1 << 32;

/// An id slice's text is not `START+LEN`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an id slice START+LEN (START below 2^32, LEN from 1 to 2^32)")]
pub struct IdSliceError(pub String);

impl IdSliceError {
    pub fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::BadInput
    }
}

impl IdSlice {
    /// Every id.
    pub const ALL: IdSlice = IdSlice {
        start: 0,
        len: SPACE,
    };

    /// `percent` (1–100, clamped) of the id space, from `start`; rounded up, so that
    /// 100 / percent slices, rounded up, cover it all.
    pub fn share(start: u32, percent: u8) -> IdSlice {
        let percent = u64::from(percent.clamp(1, 100));
        IdSlice {
            start,
            len: (SPACE * percent).div_ceil(100),
        }
    }

    pub fn is_all(self) -> bool {
        self.len == SPACE
    }

    pub fn contains(self, id: &[u8; 32]) -> bool {
        let prefix = u32::from_be_bytes([id[0], id[1], id[2], id[3]]);
        u64::from(prefix.wrapping_sub(self.start)) < self.len
    }

    /// Where the next slice starts.
    pub fn end(self) -> u32 {
        ((u64::from(self.start) + self.len) % SPACE) as u32
    }

    /// The share of the id space, in percent (for messages).
    pub fn percent(self) -> f64 {
        self.len as f64 * 100.0 / SPACE as f64
    }
}

/// `START+LEN`, in decimal: the form the host hands the helper.
impl std::fmt::Display for IdSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}+{}", self.start, self.len)
    }
}

impl std::str::FromStr for IdSlice {
    type Err = IdSliceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let refused = || IdSliceError(text.to_string());
        let (start, len) = text.split_once('+').ok_or_else(refused)?;
        let start = start.parse().map_err(|_| refused())?;
        let len: u64 = len.parse().map_err(|_| refused())?;
        if !(1..=SPACE).contains(&len) {
            return Err(refused());
        }
        Ok(IdSlice { start, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(prefix: u32) -> [u8; 32] {
        let mut id = [0x5a; 32];
        id[..4].copy_from_slice(&prefix.to_be_bytes());
        id
    }

    #[test]
    fn slices_cover_the_space_and_wrap() {
        assert!(IdSlice::ALL.contains(&id(0)) && IdSlice::ALL.contains(&id(u32::MAX)));
        assert!(IdSlice::ALL.is_all() && IdSlice::share(7, 100).is_all());
        let quarter = IdSlice::share(0, 25);
        assert!(quarter.contains(&id(0)) && quarter.contains(&id(0x3fff_ffff)));
        assert!(!quarter.contains(&id(0x4000_0000)));
        assert_eq!(quarter.end(), 0x4000_0000);
        // Four quarters from any start cover every prefix once, and end where they began.
        let mut slice = IdSlice::share(0xf000_0000, 25);
        let mut hits = [0u32; 8];
        for _ in 0..4 {
            for (i, hit) in hits.iter_mut().enumerate() {
                *hit += u32::from(slice.contains(&id((i as u32) << 29)));
            }
            slice = IdSlice::share(slice.end(), 25);
        }
        assert_eq!(hits, [1; 8]);
        assert_eq!(slice.end(), 0x3000_0000);
        // 3% rounds up: 34 slices cover every prefix.
        let mut slice = IdSlice::share(0, 3);
        let mut covered = [false; 64];
        for _ in 0..34 {
            for (i, c) in covered.iter_mut().enumerate() {
                *c |= slice.contains(&id(((i as u32) << 26) | 0x03ff_ffff));
            }
            slice = IdSlice::share(slice.end(), 3);
        }
        assert!(covered.iter().all(|c| *c));
    }

    #[test]
    fn the_text_form_round_trips_and_refuses_nonsense() {
        for slice in [IdSlice::ALL, IdSlice::share(0xdead_beef, 5)] {
            assert_eq!(slice.to_string().parse::<IdSlice>(), Ok(slice));
        }
        for bad in [
            "",
            "1",
            "1+0",
            "1+4294967297",
            "4294967296+1",
            "-1+5",
            "a+b",
        ] {
            assert!(bad.parse::<IdSlice>().is_err(), "{bad}");
        }
    }
}
