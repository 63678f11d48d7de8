//! The controlling terminal, for what must not come from stdin or be echoed: a new passphrase
//! typed by a person (`/dev/tty`, as Python's `getpass` uses it).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;

pub struct Tty {
    reader: BufReader<File>,
    writer: File,
}

impl Tty {
    /// The controlling terminal; an error when there is none (cron, a container without one).
    pub fn open() -> io::Result<Tty> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")?;
        Ok(Tty {
            writer: file.try_clone()?,
            reader: BufReader::new(file),
        })
    }

    pub fn say(&mut self, line: &str) -> io::Result<()> {
        writeln!(self.writer, "{line}")
    }

    /// Shows `prompt` and reads a line with echo off; the line's end is not part of it.
    pub fn read_secret(&mut self, prompt: &str) -> io::Result<String> {
        let fd = self.writer.as_raw_fd();
        // SAFETY: termios is plain data; tcgetattr fills it for an open descriptor.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `fd` is the open terminal; `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: as above; `quiet` is `saved` with echo off.
        if unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &quiet) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let read = write!(self.writer, "{prompt}")
            .and_then(|()| self.writer.flush())
            .and_then(|()| {
                let mut line = String::new();
                self.reader.read_line(&mut line)?;
                Ok(line)
            });
        // Echo comes back whatever happened while reading.
        // SAFETY: as above; `saved` is what the terminal had.
        unsafe { libc::tcsetattr(fd, libc::TCSAFLUSH, &saved) };
        let line = read?;
        if line.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the terminal closed while the passphrase was asked for",
            ));
        }
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    }
}
