//! Everything this process says on stderr goes through here: written at once (never a panic
//! when stderr is gone, see `say!`), and its last lines kept, so that a notification of a
//! failed run can carry what the admin would have read in cron's mail — the helper's lines
//! included, which reach us as bytes relayed from its container.
//!
//! What is kept is bounded however much is said: [`KEPT_LINES`] lines of at most
//! [`LINE_CHARS`] characters. A progress display rewrites its line with `\r`; only what stands
//! after the last `\r` is kept, as a terminal would show it.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;

/// How many of the last lines are kept.
pub const KEPT_LINES: usize = 40;
/// A longer line is cut here.
pub const LINE_CHARS: usize = 500;

struct Tail {
    lines: VecDeque<String>,
    /// The line being said, up to its newline.
    partial: String,
}

static TAIL: Mutex<Tail> = Mutex::new(Tail {
    lines: VecDeque::new(),
    partial: String::new(),
});

/// Writes `bytes` to stderr and keeps their lines; a failed write is ignored (the line is lost,
/// the run goes on).
pub fn write(bytes: &[u8]) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(bytes);
    let _ = err.flush();
    drop(err);
    remember(bytes);
}

/// The last lines said, oldest first, the unfinished one included.
pub fn last_lines() -> Vec<String> {
    let tail = TAIL.lock().unwrap_or_else(|e| e.into_inner());
    let mut lines: Vec<String> = tail.lines.iter().cloned().collect();
    if !tail.partial.is_empty() {
        lines.push(tail.partial.clone());
    }
    lines
}

fn remember(bytes: &[u8]) {
    let mut tail = TAIL.lock().unwrap_or_else(|e| e.into_inner());
    for piece in String::from_utf8_lossy(bytes).split_inclusive('\n') {
        let (text, ended) = match piece.strip_suffix('\n') {
            Some(text) => (text, true),
            None => (piece, false),
        };
        for (i, part) in text.split('\r').enumerate() {
            if i > 0 {
                tail.partial.clear();
            }
            let room = LINE_CHARS.saturating_sub(tail.partial.chars().count());
            tail.partial.extend(part.chars().take(room));
        }
        if ended {
            let line = std::mem::take(&mut tail.partial);
            if tail.lines.len() == KEPT_LINES {
                tail.lines.pop_front();
            }
            tail.lines.push_back(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_lines_are_kept_bounded_with_progress_rewrites_collapsed() {
        for n in 0..100 {
            remember(format!("line {n}\n").as_bytes());
        }
        remember(b"progress 1%\rprogress 50%\rprogress 100%\n");
        remember(&[b'x'; 2000]);
        remember(b"\nhalf");
        let lines = last_lines();
        assert_eq!(lines.len(), KEPT_LINES + 1);
        assert_eq!(lines[KEPT_LINES - 3], "line 99");
        assert_eq!(lines[KEPT_LINES - 2], "progress 100%");
        assert_eq!(lines[KEPT_LINES - 1].len(), LINE_CHARS);
        assert_eq!(lines[KEPT_LINES], "half");
    }
}
