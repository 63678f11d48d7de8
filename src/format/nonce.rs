//! AES-CTR nonce (IV) planning, borg 1.x style (spec §3.4, §3.5).
//!
//! Every encrypted object consumes `ceil(len / 16)` counter blocks from a 64-bit counter that the
//! whole repository shares: two clients that ever encrypt under the same key with overlapping
//! counter ranges leak plaintext. Borg prevents that by *reserving* ranges before use, both in the
//! repository (`<repo>/nonce`, through the `get_free_nonce` / `commit_nonce_reservation` RPCs) and
//! in the local security directory, and by starting above every value it has seen.
//!
//! This module only does the arithmetic; the repository layer performs the RPCs and file writes,
//! in the order borg uses (repository first, then the local file), before any IV is used.

use super::envelope::{ObjectKey, cipher_blocks};

/// Counter blocks borg reserves at a time beyond what the current object needs (4 GiB).
pub const RESERVATION_BLOCKS: u64 = 1 << 28;

/// Where the counter may safely continue after loading a repository: the manifest's IV plus the
/// blocks of the whole stored manifest object (a safe upper bound, as borg computes it).
pub fn manifest_nonce(key: &ObjectKey, stored_manifest: &[u8]) -> Option<u64> {
    let iv = key.stored_iv(stored_manifest)?;
    Some(iv.saturating_add(cipher_blocks(stored_manifest.len())))
}

/// A reserved counter range: IVs in `start .. end` may be used, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reservation {
    pub start: u64,
    pub end: u64,
}

/// Plans a new reservation for an object of `blocks` counter blocks when the current one (if any)
/// is used up: start above every known value — the repository's and the local nonce file, the
/// manifest nonce and the end of the previous reservation — and reserve the object plus
/// [`RESERVATION_BLOCKS`] more. `None` inputs are unknown (no file yet).
pub fn plan_reservation(
    repository: Option<u64>,
    local: Option<u64>,
    manifest: Option<u64>,
    previous_end: Option<u64>,
    blocks: u64,
) -> Reservation {
    let start = [repository, local, manifest, previous_end]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
    Reservation {
        start,
        end: start
            .saturating_add(blocks)
            .saturating_add(RESERVATION_BLOCKS),
    }
}

/// The 16 lowercase hex digits borg keeps in its nonce files (no newline).
pub fn format_nonce_file(value: u64) -> String {
    format!("{value:016x}")
}

/// Reads a nonce file's content; `None` if it is not 16 hex digits (a damaged file must stop
/// encryption, not silently restart the counter).
pub fn parse_nonce_file(content: &str) -> Option<u64> {
    let text = content.trim();
    if text.len() != 16 {
        return None;
    }
    u64::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borg_observed_reservations() {
        // spec §3.5: init reserved 2^28 + 28; the next create saw R = L = 268435484, reserved up
        // to 268435484 + 1 + 2^28 = 536870941, and used IV 0x1000001c first.
        let r = plan_reservation(
            Some(268_435_484),
            Some(268_435_484),
            Some(268_435_400),
            None,
            1,
        );
        assert_eq!(
            r,
            Reservation {
                start: 0x1000_001c,
                end: 536_870_941
            }
        );
        // A repository that is ahead of us wins, and so does our own previous reservation.
        assert_eq!(
            plan_reservation(Some(900), Some(10), None, Some(500), 2).start,
            900
        );
        assert_eq!(
            plan_reservation(Some(10), None, Some(20), Some(500), 2).start,
            500
        );
        assert_eq!(
            plan_reservation(None, None, None, None, 3),
            Reservation {
                start: 0,
                end: 3 + (1 << 28)
            }
        );
    }

    #[test]
    fn nonce_files_are_16_hex_digits() {
        assert_eq!(format_nonce_file(536_870_941), "000000002000001d");
        assert_eq!(parse_nonce_file("000000002000001d"), Some(536_870_941));
        assert_eq!(parse_nonce_file("2000001d"), None);
        assert_eq!(parse_nonce_file("zz00000020000010"), None);
    }
}
