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
//!
//! russh reads each packet in two pieces (its length, then the rest); reads go through a
//! 64 KiB buffer here, so that a burst of the server's answers costs one `recv` and one
//! `setsockopt`, not two of each per packet.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// How much is read from the socket at once.
const READ_BUFFER: usize = 64 << 10;

/// A TCP stream that neither delays its own small packets nor the ACKs of the peer's.
pub struct QuickStream {
    inner: TcpStream,
    /// Read from the socket, not yet handed out: `buffer[start..end]`.
    buffer: Box<[u8]>,
    start: usize,
    end: usize,
}

impl QuickStream {
    pub fn new(inner: TcpStream) -> io::Result<QuickStream> {
        inner.set_nodelay(true)?;
        let stream = QuickStream {
            inner,
            buffer: vec![0; READ_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        };
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
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.start == this.end {
            let mut fill = ReadBuf::new(&mut this.buffer);
            match Pin::new(&mut this.inner).poll_read(cx, &mut fill) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            this.start = 0;
            this.end = fill.filled().len();
            if this.end == 0 {
                return Poll::Ready(Ok(())); // end of stream
            }
            this.ack_promptly();
        }
        let n = buf.remaining().min(this.end - this.start);
        buf.put_slice(&this.buffer[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_in_small_pieces_give_back_every_byte_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let data = sent.clone();
        let writer = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            for piece in data.chunks(10_007) {
                socket.write_all(piece).await.unwrap();
            }
        });
        let mut stream = QuickStream::new(TcpStream::connect(address).await.unwrap()).unwrap();
        let mut received = Vec::new();
        let mut piece = [0u8; 4];
        let mut large = vec![0u8; 100_000];
        loop {
            // Alternately as russh reads: a packet length, then a larger rest.
            let n = stream.read(&mut piece).await.unwrap();
            received.extend_from_slice(&piece[..n]);
            let m = stream.read(&mut large).await.unwrap();
            received.extend_from_slice(&large[..m]);
            if n == 0 && m == 0 {
                break;
            }
        }
        writer.await.unwrap();
        assert_eq!(received, sent);
    }
}
