//! Mail over SMTP (RFC 5321): plain (the mailcow's own postfix on this host), STARTTLS
//! (RFC 3207) or TLS from the first byte (RFC 8314), with `AUTH PLAIN` (RFC 4616) when a user
//! is given. One message, then `QUIT`.
//!
//! The server is another party: each reply line is read up to [`MAX_LINE`] bytes and a reply
//! has at most [`MAX_REPLY_LINES`] lines; anything it sends that is not a well-formed reply
//! ends the call. The text of the mail is quoted-printable, so no line of ours is too long for
//! SMTP and no line can end the DATA early.

use std::sync::Arc;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::Message;
use super::config::{Mail, Security};
use super::http_client::read_secret;

/// RFC 5321 allows 512 bytes per reply line; some servers write longer ones.
const MAX_LINE: u64 = 2048;
const MAX_REPLY_LINES: usize = 100;

/// Sends `message` as described by `mail`; `tls` gives the client settings when needed.
pub async fn send(
    mail: &Mail,
    message: &Message,
    tls: impl FnOnce() -> Result<Arc<rustls::ClientConfig>, String>,
) -> Result<(), String> {
    let from = mail
        .from
        .clone()
        .unwrap_or_else(|| format!("mailcow-borg@{}", message.hostname));
    let text = compose(&from, &mail.to, message);
    let password = match &mail.login {
        Some((user, file)) => Some((user.as_str(), read_secret(file)?)),
        None => None,
    };
    let login = password
        .as_ref()
        .map(|(user, password)| (*user, password.as_str()));
    let envelope = Envelope {
        from: &from,
        to: &mail.to,
        text: &text,
        login,
        helo: &message.hostname,
    };
    let tcp = TcpStream::connect((mail.host.as_str(), mail.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let server_name = || {
        rustls_pki_types::ServerName::try_from(mail.host.clone())
            .map_err(|_| format!("{} is not a TLS server name", mail.host))
    };
    match mail.security {
        Security::None => {
            let mut session = Session::new(tcp);
            session.expect(220).await?;
            session.ehlo(envelope.helo).await?;
            envelope.deliver(&mut session).await
        }
        Security::Tls => {
            let stream = tokio_rustls::TlsConnector::from(tls()?)
                .connect(server_name()?, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            let mut session = Session::new(stream);
            session.expect(220).await?;
            session.ehlo(envelope.helo).await?;
            envelope.deliver(&mut session).await
        }
        Security::Starttls => {
            let mut plain = Session::new(tcp);
            plain.expect(220).await?;
            let offered = plain.ehlo(envelope.helo).await?;
            if !offered.iter().any(|l| l.eq_ignore_ascii_case("STARTTLS")) {
                return Err("the server offers no STARTTLS (set tls = \"tls\" or \"none\" if that is meant)".into());
            }
            plain.command("STARTTLS", 220).await?;
            // Anything the server sent before the handshake could be an attacker's injection
            // (CVE-2011-0411 and kin): refused.
            if !plain.reader.buffer().is_empty() {
                return Err("the server sent data before the TLS handshake".into());
            }
            let stream = tokio_rustls::TlsConnector::from(tls()?)
                .connect(server_name()?, plain.reader.into_inner())
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            let mut session = Session::new(stream);
            session.ehlo(envelope.helo).await?;
            envelope.deliver(&mut session).await
        }
    }
}

struct Envelope<'a> {
    from: &'a str,
    to: &'a [String],
    text: &'a str,
    login: Option<(&'a str, &'a str)>,
    helo: &'a str,
}

impl Envelope<'_> {
    /// After EHLO: log in if asked, then the transaction and QUIT.
    async fn deliver<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        session: &mut Session<S>,
    ) -> Result<(), String> {
        if let Some((user, password)) = self.login {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
            // Written without echoing: a failure names the step, never the line.
            session.write(&format!("AUTH PLAIN {token}")).await?;
            let (code, text) = session.reply().await?;
            if code != 235 {
                return Err(format!(
                    "the server refused the login of {user}: {code} {text}"
                ));
            }
        }
        session
            .command(&format!("MAIL FROM:<{}>", self.from), 250)
            .await?;
        for to in self.to {
            session.command(&format!("RCPT TO:<{to}>"), 250).await?;
        }
        session.command("DATA", 354).await?;
        let mut data = String::with_capacity(self.text.len() + 64);
        for line in self.text.split("\r\n") {
            if line.starts_with('.') {
                data.push('.');
            }
            data.push_str(line);
            data.push_str("\r\n");
        }
        data.push_str(".\r\n");
        session.write_raw(data.as_bytes()).await?;
        let (code, text) = session.reply().await?;
        if code != 250 {
            return Err(format!("the server did not take the mail: {code} {text}"));
        }
        // The mail is taken; a QUIT that goes wrong changes nothing.
        let _ = session.command("QUIT", 221).await;
        Ok(())
    }
}

struct Session<S> {
    reader: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    fn new(stream: S) -> Session<S> {
        Session {
            reader: BufReader::new(stream),
        }
    }

    async fn write(&mut self, line: &str) -> Result<(), String> {
        self.write_raw(format!("{line}\r\n").as_bytes()).await
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        let stream = self.reader.get_mut();
        stream
            .write_all(bytes)
            .await
            .map_err(|e| format!("cannot write to the server: {e}"))?;
        stream
            .flush()
            .await
            .map_err(|e| format!("cannot write to the server: {e}"))
    }

    /// Sends `line` and wants `code` back.
    async fn command(&mut self, line: &str, code: u16) -> Result<Vec<String>, String> {
        self.write(line).await?;
        self.expect_after(code, line.split(':').next().unwrap_or(line))
            .await
    }

    async fn expect(&mut self, code: u16) -> Result<Vec<String>, String> {
        self.expect_after(code, "the greeting").await
    }

    async fn expect_after(&mut self, code: u16, step: &str) -> Result<Vec<String>, String> {
        let (got, text) = self.reply().await?;
        if got != code {
            return Err(format!("{step}: the server answered {got} {text}"));
        }
        Ok(text.split('\n').map(str::to_string).collect())
    }

    /// EHLO; the extensions the server offers (the reply's lines after the first).
    async fn ehlo(&mut self, helo: &str) -> Result<Vec<String>, String> {
        let lines = self.command(&format!("EHLO {helo}"), 250).await?;
        Ok(lines.into_iter().skip(1).collect())
    }

    /// One reply: its code and its lines' texts joined by `\n`.
    async fn reply(&mut self) -> Result<(u16, String), String> {
        let mut texts = Vec::new();
        loop {
            let mut line = Vec::new();
            (&mut self.reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .await
                .map_err(|e| format!("cannot read the server's reply: {e}"))?;
            if line.last() != Some(&b'\n') {
                return Err(if line.is_empty() {
                    "the server closed the connection".into()
                } else {
                    "the server's reply line is too long or cut off".into()
                });
            }
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            let code = line
                .get(..3)
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (200..600).contains(c));
            let (Some(code), Some(more)) = (code, line.as_bytes().get(3).copied().or(Some(b' ')))
            else {
                return Err("the server's reply is not SMTP".into());
            };
            texts.push(line.get(4..).unwrap_or("").to_string());
            match more {
                b' ' => return Ok((code, texts.join("\n"))),
                b'-' if texts.len() < MAX_REPLY_LINES => {}
                b'-' => return Err("the server's reply has too many lines".into()),
                _ => return Err("the server's reply is not SMTP".into()),
            }
        }
    }
}

/// The mail: headers, then the text (and on trouble the log), quoted-printable, CRLF lines.
fn compose(from: &str, to: &[String], message: &Message) -> String {
    let now = crate::ops::system::now_micros();
    let mut body = message.text.clone();
    if !message.log.is_empty() && message.event != super::Event::Success {
        body.push_str("\n\nThe run's last lines:\n\n");
        body.push_str(&message.log.join("\n"));
    }
    let headers = [
        format!("Date: {}", rfc5322_date(now)),
        format!("From: mailcow-borg <{from}>"),
        format!("To: {}", to.join(", ")),
        format!("Subject: {}", encoded_word(&message.title)),
        format!(
            "Message-ID: <{now}.{}@{}>",
            std::process::id(),
            message.hostname
        ),
        "MIME-Version: 1.0".into(),
        "Content-Type: text/plain; charset=utf-8".into(),
        "Content-Transfer-Encoding: quoted-printable".into(),
        "Auto-Submitted: auto-generated".into(),
    ];
    format!(
        "{}\r\n\r\n{}",
        headers.join("\r\n"),
        quoted_printable(&body)
    )
}

/// A header's text as it is when it is plain ASCII, else as one RFC 2047 encoded word.
fn encoded_word(text: &str) -> String {
    if text.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        text.to_string()
    } else {
        format!(
            "=?utf-8?b?{}?=",
            base64::engine::general_purpose::STANDARD.encode(text)
        )
    }
}

/// RFC 2045 quoted-printable, lines at most 76 characters, CRLF line ends.
fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for (n, line) in text.split('\n').enumerate() {
        if n > 0 {
            out.push_str("\r\n");
        }
        let bytes = line.trim_end_matches('\r').as_bytes();
        let mut width = 0;
        for (i, &byte) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let plain = (byte.is_ascii_graphic() && byte != b'=') || (byte == b' ' && !last);
            let piece = if plain {
                char::from(byte).to_string()
            } else {
                format!("={byte:02X}")
            };
            if width + piece.len() > 75 {
                out.push_str("=\r\n");
                width = 0;
            }
            width += piece.len();
            out.push_str(&piece);
        }
    }
    out
}

/// `Mon, 07 Dec 2026 06:22:42 +0000`.
fn rfc5322_date(unix_micros: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // `YYYY-MM-DDTHH:MM:SS.ffffff`, UTC.
    let iso = crate::format::manifest::format_timestamp(unix_micros);
    let month: usize = iso[5..7].parse().unwrap_or(1);
    let weekday = unix_micros.div_euclid(86_400_000_000).rem_euclid(7) as usize;
    format!(
        "{}, {} {} {} {} +0000",
        DAYS[weekday],
        &iso[8..10],
        MONTHS[month - 1],
        &iso[..4],
        &iso[11..19]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_quoted_printable_with_short_lines() {
        let long = "x".repeat(200);
        let encoded = quoted_printable(&format!("Grüße = ok \n.{long}\nend"));
        assert!(
            encoded.starts_with("Gr=C3=BC=C3=9Fe =3D ok=20\r\n."),
            "{encoded}"
        );
        assert!(encoded.split("\r\n").all(|l| l.len() <= 76), "{encoded}");
        assert!(encoded.ends_with("\r\nend"));
        assert_eq!(encoded_word("backup ok"), "backup ok");
        assert_eq!(encoded_word("Grüße"), "=?utf-8?b?R3LDvMOfZQ==?=");
    }

    #[test]
    fn the_date_is_rfc5322() {
        // 2026-12-07 06:22:42 UTC was a Monday.
        assert_eq!(
            rfc5322_date(1_796_624_562_000_000),
            "Mon, 07 Dec 2026 06:22:42 +0000"
        );
        assert_eq!(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
    }

    #[tokio::test]
    async fn hostile_replies_end_the_call() {
        for (reply, expected) in [
            (&b"220-ok\r\n"[..], "closed"),
            (b"hello\r\n", "not SMTP"),
            (b"220xok\r\n", "not SMTP"),
            (&[b'2'; 5000][..], "too long"),
        ] {
            let (mut server, client) = tokio::io::duplex(8192);
            server.write_all(reply).await.unwrap();
            drop(server);
            let mut session = Session::new(client);
            let error = session.reply().await.unwrap_err();
            assert!(error.contains(expected), "{error}");
        }
        let many = "250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        let (mut server, client) = tokio::io::duplex(8192);
        server.write_all(many.as_bytes()).await.unwrap();
        let error = Session::new(client).reply().await.unwrap_err();
        assert!(error.contains("too many lines"), "{error}");
    }
}
