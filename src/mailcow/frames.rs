//! The database dump's way from the host into the helper: framed, over the helper's stdin.
//!
//! A plain byte stream cannot tell "the dump ended" from "the dump broke off": `mariadb-dump`
//! may fail midway (a crashed table, a lost connection), and the host learns that only from its
//! exit code, after the last byte. So the host wraps the dump in frames and ends with a verdict:
//!
//! ```text
//! 'D' u32be(len) bytes…     a piece of the dump (len ≤ MAX_FRAME)
//! 'E' u32be(0)              the dump is complete
//! 'F' u32be(len) message…   the dump failed; the message says why
//! ```
//!
//! The helper reads the frames as one stream ([`FramedReader`]); a failure frame, or the input
//! ending without a verdict (the host died), is a read error, which fails the backup before
//! anything is committed (the stream input's errors are fatal).

use std::io::{self, Read};

/// The largest data frame.
pub const MAX_FRAME: usize = 1 << 20;

const DATA: u8 = b'D';
const END: u8 = b'E';
const FAILED: u8 = b'F';

/// The header of a data frame of `len` bytes.
pub fn data_header(len: usize) -> [u8; 5] {
    frame_header(DATA, len)
}

/// The frame that says the dump is complete.
pub fn end_frame() -> [u8; 5] {
    frame_header(END, 0)
}

/// The frame that says the dump failed, and why.
pub fn failed_frame(message: &str) -> Vec<u8> {
    let message = &message.as_bytes()[..message.len().min(MAX_FRAME)];
    let mut frame = frame_header(FAILED, message.len()).to_vec();
    frame.extend_from_slice(message);
    frame
}

fn frame_header(kind: u8, len: usize) -> [u8; 5] {
    let mut header = [kind, 0, 0, 0, 0];
    header[1..].copy_from_slice(&(len as u32).to_be_bytes());
    header
}

/// The dump's bytes, out of the frames read from `inner`.
pub struct FramedReader<R> {
    inner: R,
    /// Bytes left in the current data frame.
    left: usize,
    done: bool,
}

impl<R: Read> FramedReader<R> {
    pub fn new(inner: R) -> Self {
        FramedReader {
            inner,
            left: 0,
            done: false,
        }
    }

    fn header(&mut self) -> io::Result<(u8, usize)> {
        let mut header = [0u8; 5];
        self.inner.read_exact(&mut header).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::other(
                    "the dump's stream ended without saying it was complete (the host process stopped?)",
                )
            } else {
                e
            }
        })?;
        let len = u32::from_be_bytes(header[1..].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::other(
                "the dump's stream is garbled (frame too large)",
            ));
        }
        Ok((header[0], len))
    }
}

impl<R: Read> Read for FramedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            match self.header()? {
                (DATA, len) => self.left = len,
                (END, 0) => self.done = true,
                (FAILED, len) => {
                    let mut message = vec![0; len];
                    self.inner.read_exact(&mut message)?;
                    return Err(io::Error::other(
                        String::from_utf8_lossy(&message).into_owned(),
                    ));
                }
                _ => {
                    return Err(io::Error::other(
                        "the dump's stream is garbled (unknown frame)",
                    ));
                }
            }
        }
        let want = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::other(
                "the dump's stream ended inside a frame (the host process stopped?)",
            ));
        }
        self.left -= n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(pieces: &[&[u8]], verdict: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for piece in pieces {
            out.extend_from_slice(&data_header(piece.len()));
            out.extend_from_slice(piece);
        }
        out.extend_from_slice(verdict);
        out
    }

    fn read_all(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        FramedReader::new(bytes).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn a_complete_dump_reads_back_whole() {
        let bytes = framed(&[b"CREATE TABLE", b"", b" t;\n"], &end_frame());
        assert_eq!(read_all(&bytes).unwrap(), b"CREATE TABLE t;\n");
    }

    #[test]
    fn a_failed_dump_is_an_error_with_the_hosts_reason() {
        let bytes = framed(&[b"half"], &failed_frame("mariadb-dump exited with 2"));
        let e = read_all(&bytes).unwrap_err();
        assert_eq!(e.to_string(), "mariadb-dump exited with 2");
    }

    #[test]
    fn a_stream_without_verdict_or_cut_inside_a_frame_is_an_error() {
        let bytes = framed(&[b"half"], b"");
        assert!(
            read_all(&bytes)
                .unwrap_err()
                .to_string()
                .contains("without saying")
        );
        let mut cut = framed(&[b"0123456789"], b"");
        cut.truncate(8);
        assert!(
            read_all(&cut)
                .unwrap_err()
                .to_string()
                .contains("inside a frame")
        );
        assert!(
            read_all(b"X\0\0\0\0")
                .unwrap_err()
                .to_string()
                .contains("garbled")
        );
    }
}
