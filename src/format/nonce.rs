//! AES-CTR nonce (IV) planning, borg 1.x style (`docs/borg-format.md` §3.4, §3.5).
//!
//! Every encrypted object consumes `ceil(len / 16)` counter blocks from a 64-bit counter that the
//! whole repository shares: two clients that ever encrypt under the same key with overlapping
//! counter ranges leak plaintext. Borg prevents that by *reserving* ranges before use, both in the
//! repository (`<repo>/nonce`, through the `get_free_nonce` / `commit_nonce_reservation` RPCs) and
//! in the local security directory, and by starting above every value it has seen.
//!
//! This module only does the arithmetic; `ops::nonces` performs the RPCs and file writes,
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

/// No reservation may reach past this. The counter is shared by every client for the life of
/// the repository, and an honest one never gets near: half of the 64-bit space is 2^63 blocks,
/// 128 EiB of ciphertext. A value above it can only come from a server that wants the counter to
/// wrap around to IVs already used — which would hand it the keystream of new backups.
pub const NONCE_CEILING: u64 = 1 << 63;

/// How far the repository's `nonce` may be ahead of everything this machine knows (its security
/// dir's record, the manifest's IV) before it is refused as implausible: 2^48 blocks is a
/// million abandoned reservations of [`RESERVATION_BLOCKS`], or 4 PiB of ciphertext written by
/// other clients since we last looked. A server that jumps further is burning the counter space.
pub const MAX_JUMP: u64 = 1 << 48;

/// Why a reservation was refused: nothing may be encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReservationRefused {
    #[error(
        "the repository's nonce counter ({repository:#x}) is implausibly far ahead of the last \
         value this machine recorded ({known:#x}); a server that moves it this far may be trying \
         to make the AES-CTR counter wrap and reuse nonces"
    )]
    Jump { repository: u64, known: u64 },
    #[error(
        "a nonce reservation from {start:#x} would pass the end of the counter space that is \
         safe to use ({NONCE_CEILING:#x}); the repository's nonce counter is not one an honest \
         server reports"
    )]
    Exhausted { start: u64 },
}

/// Plans a new reservation for an object of `blocks` counter blocks when the current one (if any)
/// is used up: start above every known value — the repository's and the local nonce file, the
/// manifest nonce and the end of the previous reservation — and reserve the object plus
/// [`RESERVATION_BLOCKS`] more. `None` inputs are unknown (no file yet).
///
/// The repository's value comes from the server, which is not trusted: it is refused when it is
/// more than [`MAX_JUMP`] ahead of what this machine knows, and no reservation may end above
/// [`NONCE_CEILING`], so no arithmetic on an IV can ever wrap.
pub fn plan_reservation(
    repository: Option<u64>,
    local: Option<u64>,
    manifest: Option<u64>,
    previous_end: Option<u64>,
    blocks: u64,
) -> Result<Reservation, ReservationRefused> {
    let known = [local, manifest, previous_end].into_iter().flatten().max();
    if let (Some(repository), Some(known)) = (repository, known)
        && repository.saturating_sub(known) > MAX_JUMP
    {
        return Err(ReservationRefused::Jump { repository, known });
    }
    let start = repository.into_iter().chain(known).max().unwrap_or(0);
    let end = start
        .checked_add(blocks)
        .and_then(|end| end.checked_add(RESERVATION_BLOCKS))
        .filter(|&end| end <= NONCE_CEILING)
        .ok_or(ReservationRefused::Exhausted { start })?;
    Ok(Reservation { start, end })
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
        // docs/borg-format.md §3.5: init reserved 2^28 + 28; the next create saw R = L = 268435484,
        // reserved up to 268435484 + 1 + 2^28 = 536870941, and used IV 0x1000001c first.
        let r = plan_reservation(
            Some(268_435_484),
            Some(268_435_484),
            Some(268_435_400),
            None,
            1,
        )
        .unwrap();
        assert_eq!(
            r,
            Reservation {
                start: 0x1000_001c,
                end: 536_870_941
            }
        );
        // A repository that is ahead of us wins, and so does our own previous reservation.
        assert_eq!(
            plan_reservation(Some(900), Some(10), None, Some(500), 2)
                .unwrap()
                .start,
            900
        );
        assert_eq!(
            plan_reservation(Some(10), None, Some(20), Some(500), 2)
                .unwrap()
                .start,
            500
        );
        assert_eq!(
            plan_reservation(None, None, None, None, 3),
            Ok(Reservation {
                start: 0,
                end: 3 + (1 << 28)
            })
        );
    }

    #[test]
    fn a_server_cannot_make_the_counter_wrap() {
        // Near 2^64 the old saturating plan reserved a range whose IVs wrapped to 0.
        let near_end = u64::MAX - 10;
        assert_eq!(
            plan_reservation(Some(near_end), None, None, None, 1),
            Err(ReservationRefused::Exhausted { start: near_end })
        );
        // Just under the ceiling is still refused if the reservation would cross it...
        let under = NONCE_CEILING - RESERVATION_BLOCKS;
        assert_eq!(
            plan_reservation(Some(under), None, None, None, 1),
            Err(ReservationRefused::Exhausted { start: under })
        );
        // ...and one that ends exactly at it is the last one allowed.
        assert_eq!(
            plan_reservation(Some(under - 1), None, None, None, 1),
            Ok(Reservation {
                start: under - 1,
                end: NONCE_CEILING
            })
        );
        // Huge object sizes cannot overflow either.
        assert!(plan_reservation(None, None, None, None, u64::MAX).is_err());
    }

    #[test]
    fn a_jump_far_beyond_what_this_machine_knows_is_refused() {
        let known = 5 << 28;
        assert_eq!(
            plan_reservation(Some(known + MAX_JUMP + 1), Some(known), None, None, 1),
            Err(ReservationRefused::Jump {
                repository: known + MAX_JUMP + 1,
                known
            })
        );
        // The manifest's IV counts as known on a machine without a record of its own.
        assert!(plan_reservation(Some(known + MAX_JUMP + 1), None, Some(known), None, 1).is_err());
        // Other clients may have moved it ahead by a lot, as long as it is plausible.
        assert_eq!(
            plan_reservation(Some(known + MAX_JUMP), Some(known), None, None, 1)
                .unwrap()
                .start,
            known + MAX_JUMP
        );
        // A fresh machine on a fresh repository has nothing to compare with.
        assert!(plan_reservation(Some(1 << 60), None, None, None, 1).is_ok());
    }

    #[test]
    fn nonce_files_are_16_hex_digits() {
        assert_eq!(format_nonce_file(536_870_941), "000000002000001d");
        assert_eq!(parse_nonce_file("000000002000001d"), Some(536_870_941));
        assert_eq!(parse_nonce_file("2000001d"), None);
        assert_eq!(parse_nonce_file("zz00000020000010"), None);
    }
}
