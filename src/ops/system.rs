//! What operations take from the system rather than from their inputs: the clock, in borg's
//! unit, and the kernel's random source.

use std::io;

/// Now, in Unix microseconds: the unit borg's timestamps and archive times are kept in.
pub fn now_micros() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    since.as_micros() as i64
}

/// `N` bytes from the kernel's random source (for salts and the like, never retried in a
/// weaker way: a failing random source is a broken system).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buffer = [0u8; N];
    let mut filled = 0;
    while filled < N {
        // SAFETY: the pointer and length describe the unfilled tail of a live local buffer.
        let got = unsafe { libc::getrandom(buffer[filled..].as_mut_ptr().cast(), N - filled, 0) };
        if got > 0 {
            filled += got as usize;
        } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            panic!(
                "the kernel's random source failed: {}",
                io::Error::last_os_error()
            );
        }
    }
    buffer
}

/// `unix_micros` as broken-down local time (honouring `TZ` and `/etc/localtime`), to the
/// second below it: what Python's `time.localtime` gives borg for archive times.
pub fn local_time(unix_micros: i64) -> libc::tm {
    let seconds = unix_micros.div_euclid(1_000_000) as libc::time_t;
    // SAFETY: `tm` is plain data; localtime_r fills it from the valid `seconds` and touches
    // nothing else (it is the thread-safe variant).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&seconds, &mut tm) };
    tm
}
