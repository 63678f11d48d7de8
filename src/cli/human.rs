//! How borg shows times, modes and sizes to people (`docs/borg-cli.md` §0): local time as
//! `Sat, 2026-11-28 20:29:36`, ISO local time without a zone in JSON, `ls`-style modes,
//! decimal size units.

use crate::format::key::hex;
use crate::ops::system::local_time;

/// Broken-down local time (honouring `TZ` and `/etc/localtime`, as Python's does).
struct LocalTime {
    tm: libc::tm,
    micros: i64,
}

fn local(unix_micros: i64) -> LocalTime {
    LocalTime {
        tm: local_time(unix_micros),
        micros: unix_micros.rem_euclid(1_000_000),
    }
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// `2026-11-28<separator>20:29:36`.
fn date_time(t: &libc::tm, separator: char) -> String {
    format!(
        "{:04}-{:02}-{:02}{separator}{:02}:{:02}:{:02}",
        t.tm_year + 1900,
        t.tm_mon + 1,
        t.tm_mday,
        t.tm_hour,
        t.tm_min,
        t.tm_sec
    )
}

/// `Sat, 2026-11-28 20:29:36`.
pub fn time(unix_micros: i64) -> String {
    let t = local(unix_micros).tm;
    let weekday = WEEKDAYS[t.tm_wday.rem_euclid(7) as usize];
    format!("{weekday}, {}", date_time(&t, ' '))
}

/// borg's `format_archive`, one archive as `list` and `prune --list` show it: the name padded to
/// 36 characters, the start in local time, the id in hex.
pub fn archive_line(name: &str, unix_micros: i64, id: &[u8]) -> String {
    format!("{name:<36} {} [{}]", time(unix_micros), hex(id))
}

/// `2026-11-28T20:29:36.123456` in local time.
pub fn iso_time(unix_micros: i64) -> String {
    let LocalTime { tm, micros } = local(unix_micros);
    format!("{}.{micros:06}", date_time(&tm, 'T'))
}

/// An archive time in JSON: borg truncates these to whole seconds.
pub fn iso_time_seconds(unix_micros: i64) -> String {
    iso_time(unix_micros - unix_micros.rem_euclid(1_000_000))
}

/// Python's `stat.filemode`: `-rw-r--r--`, `drwxrwxrwt`, `-rwsr-xr-x`.
pub fn filemode(mode: u32) -> String {
    let kind = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        0o010000 => 'p',
        0o020000 => 'c',
        0o060000 => 'b',
        0o140000 => 's',
        0o100000 => '-',
        _ => '?',
    };
    let mut text = String::from(kind);
    for (shift, special, set_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        text.push(if bits & 4 != 0 { 'r' } else { '-' });
        text.push(if bits & 2 != 0 { 'w' } else { '-' });
        text.push(match (bits & 1 != 0, mode & special != 0) {
            (true, true) => set_char,
            (false, true) => set_char.to_ascii_uppercase(),
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    text
}

/// borg's `format_file_size`: decimal units with two decimals (`1.84 kB`, `58 B`).
pub fn size(bytes: i128) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut value = bytes as f64;
    for unit in UNITS {
        // Compared after rounding to the shown precision, so 999.999 kB becomes 1.00 MB.
        if ((value * 100.0).round() / 100.0).abs() < 1000.0 || unit == "YB" {
            return if unit == "B" {
                format!("{bytes} B")
            } else {
                format!("{value:.2} {unit}")
            };
        }
        value /= 1000.0;
    }
    unreachable!("the last unit always returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_sizes_look_like_borgs() {
        assert_eq!(filemode(0o100644), "-rw-r--r--");
        assert_eq!(filemode(0o041777), "drwxrwxrwt");
        assert_eq!(filemode(0o104755), "-rwsr-xr-x");
        assert_eq!(filemode(0o102644), "-rw-r-Sr--");
        assert_eq!(filemode(0o120777), "lrwxrwxrwx");
        assert_eq!(size(58), "58 B");
        assert_eq!(size(1840), "1.84 kB");
        assert_eq!(size(999_999), "1.00 MB");
        assert_eq!(size(3_500_000_000), "3.50 GB");
    }
}
