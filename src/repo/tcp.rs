//! The TCP socket under the SSH session, tuned for a conversation of small messages.
//!
//! An SSH session start and borg's RPC are chains of small packets, each side often sending two
//! in a row. With Linux defaults that costs ~40 ms per chain: the sender's Nagle algorithm holds
//! the second packet until the first is acknowledged, and the receiver delays that
//! acknowledgement, hoping to piggyback it on a reply it has not got yet. Measured against
//! OpenSSH 9.2 on loopback, a session start paid that twice (our Nagle in the handshake, the
//! server's after authentication) — a fifth of an unchanged backup's time.
//!
//! Both sides of it are ours to switch off: `TCP_NODELAY` sends our packets at once, and
//! `TCP_QUICKACK`, set again after every read because the kernel drops back into delayed-ACK
//! mode by itself, acknowledges the server's at once. The extra ACKs cost nothing that matters
//! next to the data they acknowledge.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream that neither delays its own small packets nor the ACKs of the peer's.
pub struct QuickStream {
    inner: TcpStream,
}

impl QuickStream {
    pub fn new(inner: TcpStream) -> io::Result<QuickStream> {
        inner.set_nodelay(true)?;
        let stream = QuickStream { inner };
        stream.ack_promptly();
        Ok(stream)
    }

    /// Failure only means the platform lacks the option: the session works, only slower.
    fn ack_promptly(&self) {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let _ = socket2::SockRef::from(&self.inner).set_tcp_quickack(true);
    }
}

impl AsyncRead for QuickStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.ack_promptly();
        }
        polled
    }
}

impl AsyncWrite for QuickStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
