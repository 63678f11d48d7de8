//! The smallest HTTP/1.1 client the notifications need: one request per connection, over TCP
//! or rustls, through hyper. No redirects are followed (a ping URL that moved is a mistake the
//! admin should see), and of an answer only its status is used.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// At most this much of an answer's body is read (and thrown away).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A request to send: method, URL, headers, body.
pub struct Request {
    method: Method,
    url: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Vec<u8>,
}

impl Request {
    pub fn get(url: Uri) -> Request {
        Request {
            method: Method::GET,
            url,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn post(url: Uri, content_type: &str, body: Vec<u8>) -> Request {
        let mut request = Request {
            method: Method::POST,
            url,
            headers: Vec::new(),
            body,
        };
        request.headers.push((
            http::header::CONTENT_TYPE,
            HeaderValue::from_str(content_type).expect("our content types are header values"),
        ));
        request
    }

    pub fn header(&mut self, name: &str, value: &str) -> Result<(), String> {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("the {name} header cannot be sent as it is"))?;
        self.headers.push((name, value));
        Ok(())
    }

    /// `Authorization: Bearer <the token in file>`.
    pub fn bearer(&mut self, file: &Path) -> Result<(), String> {
        let token = read_secret(file)?;
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| format!("the token in {} is not one line of text", file.display()))?;
        value.set_sensitive(true);
        self.headers.push((http::header::AUTHORIZATION, value));
        Ok(())
    }
}

/// The first line of `file`, trimmed: a token or password as admins write them into files.
pub fn read_secret(file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let secret = text.lines().next().unwrap_or("").trim().to_string();
    if secret.is_empty() {
        return Err(format!("{} is empty", file.display()));
    }
    Ok(secret)
}

/// Text for a header value: what is not visible ASCII becomes `?` (ntfy's titles are UTF-8,
/// but proxies on the way need not be).
pub fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// `url` with `suffix` added to its path, its query kept.
pub fn with_path_suffix(url: &Uri, suffix: &str) -> Result<Uri, String> {
    let path = url.path().trim_end_matches('/');
    let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
    rebuild(url, &format!("{path}{suffix}{query}"))
}

/// `url` with `pairs` as query parameters, replacing any of the same names.
pub fn with_query(url: &Uri, pairs: &[(&str, &str)]) -> Result<Uri, String> {
    let mut query: Vec<String> = url
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| {
            !p.is_empty()
                && !pairs
                    .iter()
                    .any(|(name, _)| p.split('=').next() == Some(name))
        })
        .map(str::to_string)
        .collect();
    query.extend(
        pairs
            .iter()
            .map(|(name, value)| format!("{name}={}", percent_encode(value))),
    );
    rebuild(url, &format!("{}?{}", url.path(), query.join("&")))
}

fn rebuild(url: &Uri, path_and_query: &str) -> Result<Uri, String> {
    let mut parts = url.clone().into_parts();
    parts.path_and_query = Some(
        path_and_query
            .parse()
            .map_err(|_| "the URL cannot take its path".to_string())?,
    );
    Uri::from_parts(parts).map_err(|e| e.to_string())
}

/// RFC 3986's unreserved characters as they are, every other byte `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends `request`; `Ok` when the answer is a 2xx. `tls` gives the client settings for https.
pub async fn send(
    request: Request,
    tls: impl FnOnce() -> Result<Arc<rustls::ClientConfig>, String>,
) -> Result<(), String> {
    let url = &request.url;
    let https = url.scheme_str() == Some("https");
    let host = url.host().ok_or("the URL names no host")?;
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if https {
        let name = rustls_pki_types::ServerName::try_from(bare_host.to_string())
            .map_err(|_| "the URL's host is not a TLS server name".to_string())?;
        let stream = tokio_rustls::TlsConnector::from(tls()?)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(stream, request).await
    } else {
        exchange(tcp, request).await
    }
}

async fn exchange<S>(stream: S, request: Request) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let connection = tokio::spawn(connection);
    let url = &request.url;
    let authority = url.authority().ok_or("the URL names no host")?;
    // user:password@ in the URL (ntfy's basic auth) becomes a header, not part of Host.
    let (userinfo, host) = match authority.as_str().rsplit_once('@') {
        Some((userinfo, host)) => (Some(userinfo), host),
        None => (None, authority.as_str()),
    };
    let mut builder = hyper::Request::builder()
        .method(request.method)
        .uri(url.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, host)
        .header(
            http::header::USER_AGENT,
            concat!("mailcow-borg/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(userinfo) = userinfo {
        let decoded = percent_decode(userinfo);
        let mut value = HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(decoded)
        ))
        .map_err(|e| e.to_string())?;
        value.set_sensitive(true);
        builder = builder.header(http::header::AUTHORIZATION, value);
    }
    for (name, value) in request.headers {
        builder = builder.header(name, value);
    }
    let outgoing = builder
        .body(Full::new(Bytes::from(request.body)))
        .map_err(|e| e.to_string())?;
    let answer = sender
        .send_request(outgoing)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = answer.status();
    // The body is read only so the server sees a clean end, and only so far.
    let mut body = answer.into_body();
    let mut read = 0;
    while read < MAX_ANSWER_BYTES {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            _ => break,
        }
    }
    connection.abort();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("the server answered {status}"))
    }
}

/// `%XX` escapes of a URL's userinfo decoded; anything malformed is kept as it is.
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries_are_rewritten_as_the_services_want() {
        let hc: Uri = "https://hc-ping.com/abc/?create=1".parse().unwrap();
        assert_eq!(
            with_path_suffix(&hc, "/fail").unwrap().to_string(),
            "https://hc-ping.com/abc/fail?create=1"
        );
        let kuma: Uri = "http://kuma:3001/api/push/Tok?status=up&msg=OK&ping="
            .parse()
            .unwrap();
        let pushed = with_query(
            &kuma,
            &[
                ("status", "down"),
                ("msg", "backup failed: 50% done"),
                ("ping", "1200"),
            ],
        )
        .unwrap();
        assert_eq!(
            pushed.to_string(),
            "http://kuma:3001/api/push/Tok?status=down&msg=backup%20failed%3A%2050%25%20done&ping=1200"
        );
        assert_eq!(percent_decode("us%40er:p%3Ass"), b"us@er:p:ss");
        assert_eq!(header_text("backup ✓ ok\r\n"), "backup ? ok??");
    }
}
