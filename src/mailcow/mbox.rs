//! Messages as an mbox file, in the mboxrd dialect: each message starts with a `From ` line
//! (its sender and its date, `From sender@example.org Mon Dec  7 00:18:02 2026`), and a line
//! of the message that starts with `From `, after any number of `>`, gets one more `>` — so
//! that no line of a message can be taken for the start of the next, and a reader that
//! removes one `>` from such lines (mboxrd) gets the message back exactly. Each message ends
//! with a line end and is followed by an empty line. Pure: the caller gives the bytes.

use std::io::{self, Write};

use crate::format::manifest::civil_from_days;

/// The sender when a message names none usable (what mail programs write for a bounce).
const NO_SENDER: &str = "MAILER-DAEMON";

/// Writes one message, received at `received` (seconds since the epoch), to `out`.
pub fn write_message(out: &mut impl Write, message: &[u8], received: i64) -> io::Result<()> {
    writeln!(out, "From {} {}", sender(message), asctime(received))?;
    for line in message.split_inclusive(|b| *b == b'\n') {
        let quoted = line.iter().position(|b| *b != b'>').unwrap_or(line.len());
        if line[quoted..].starts_with(b"From ") {
            out.write_all(b">")?;
        }
        out.write_all(line)?;
    }
    if !message.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.write_all(b"\n")
}

/// The message's header block (up to its first empty line), unfolded: a header a line.
fn headers(message: &[u8]) -> Vec<Vec<u8>> {
    let mut headers: Vec<Vec<u8>> = Vec::new();
    for line in message.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        match (line[0], headers.last_mut()) {
            (b' ' | b'\t', Some(last)) => last.extend_from_slice(line),
            _ => headers.push(line.to_vec()),
        }
    }
    headers
}

/// The value of the first header `name` (case-insensitive).
fn header<'a>(headers: &'a [Vec<u8>], name: &str) -> Option<&'a [u8]> {
    headers.iter().find_map(|h| {
        let (field, value) = h.split_at(h.iter().position(|b| *b == b':')?);
        field
            .trim_ascii()
            .eq_ignore_ascii_case(name.as_bytes())
            .then_some(&value[1..])
    })
}

/// The sender for the `From ` line: the envelope sender (`Return-Path`) the delivery recorded,
/// else the address of the `From` header, else [`NO_SENDER`]. One word of printable ASCII,
/// or the line would not parse.
fn sender(message: &[u8]) -> String {
    let headers = headers(message);
    let address = |value: &[u8]| -> Option<String> {
        let value = value.trim_ascii();
        let inner = match (
            value.iter().position(|b| *b == b'<'),
            value.iter().rposition(|b| *b == b'>'),
        ) {
            (Some(open), Some(close)) if open < close => &value[open + 1..close],
            _ => value
                .split(|b| b.is_ascii_whitespace())
                .find(|word| word.contains(&b'@'))?,
        };
        let inner = inner.trim_ascii();
        (!inner.is_empty() && inner.iter().all(|b| b.is_ascii_graphic()))
            .then(|| String::from_utf8_lossy(inner).into_owned())
    };
    header(&headers, "Return-Path")
        .and_then(address)
        .or_else(|| header(&headers, "From").and_then(address))
        .unwrap_or_else(|| NO_SENDER.to_string())
}

/// `seconds` since the epoch as C's `asctime` writes it, in UTC: `Mon Dec  7 00:18:02 2026`.
fn asctime(seconds: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{} {} {day:>2} {:02}:{:02}:{:02} {year}",
        DAYS[days.rem_euclid(7) as usize],
        MONTHS[(month - 1) as usize],
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(message: &[u8], received: i64) -> String {
        let mut out = Vec::new();
        write_message(&mut out, message, received).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn from_lines_are_quoted_once_more_and_every_message_ends_with_an_empty_line() {
        let message = b"Return-Path: <bounce@example.org>\nFrom: A <a@example.org>\n\nFrom here\n>From there\n>>From far\nFromage\n From indented\nlast";
        assert_eq!(
            written(message, 1_796_602_682),
            "From bounce@example.org Mon Dec  7 00:18:02 2026\nReturn-Path: <bounce@example.org>\nFrom: A <a@example.org>\n\n>From here\n>>From there\n>>>From far\nFromage\n From indented\nlast\n\n"
        );
    }

    #[test]
    fn the_sender_is_the_envelopes_then_the_from_headers_then_mailer_daemon() {
        assert_eq!(
            sender(b"From: \"Doe, J\" <j@example.org>\nReturn-Path: <r@example.net>\n\nx"),
            "r@example.net"
        );
        assert_eq!(
            sender(b"Subject: x\nfrom:\r\n  Jane <jane@example.org>\r\n\r\nbody"),
            "jane@example.org"
        );
        assert_eq!(sender(b"From: plain@example.org\n\n"), "plain@example.org");
        assert_eq!(sender(b"Return-Path: <>\n\n"), NO_SENDER);
        assert_eq!(sender(b"From: nobody at all\n\n"), NO_SENDER);
        assert_eq!(sender(b"Subject: x\n\nFrom: body@example.org\n"), NO_SENDER);
    }

    #[test]
    fn dates_are_asctimes_in_utc() {
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(951_782_400), "Tue Feb 29 00:00:00 2000");
        assert_eq!(asctime(1_796_602_682), "Mon Dec  7 00:18:02 2026");
        assert_eq!(asctime(-1), "Wed Dec 31 23:59:59 1969");
    }
}
