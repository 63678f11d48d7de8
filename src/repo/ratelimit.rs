//! `--upload-ratelimit`: the bytes written to the repository connection, held to a rate.
//!
//! Every byte for the server passes through the one writer of the RPC client (requests are
//! serialized there, whichever thread or task made them), so the limit sits on that stream,
//! below the RPC and above the transport: one token bucket, no matter how many workers feed it.
//! Without a limit the writer is not wrapped at all.
//!
//! The bucket holds at most a tenth of a second's worth of bytes: a burst can then put at most
//! 2 % more than the rate into any 5 s window, well inside the ±10 % promised.

use std::io;
use std::num::NonZeroU64;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;
use tokio::time::Sleep;

/// A token bucket over bytes, with the clock passed in (so that it can be tested without one).
#[derive(Debug)]
pub struct TokenBucket {
    /// Bytes per second.
    rate: u64,
    /// The most tokens it holds: a tenth of the rate, at least one byte.
    capacity: u64,
    /// Tokens now, in bytes; fractions carried as nanosecond-bytes to stay exact.
    tokens_nanos: u128,
    last: Instant,
}

/// One second in nanoseconds: tokens are counted as bytes × 10⁹ to keep sub-byte refills.
const NANOS: u128 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: NonZeroU64, now: Instant) -> TokenBucket {
        let rate = rate.get();
        let capacity = (rate / 10).max(1);
        TokenBucket {
            rate,
            capacity,
            tokens_nanos: u128::from(capacity) * NANOS,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        self.tokens_nanos = (self.tokens_nanos + elapsed.as_nanos() * u128::from(self.rate))
            .min(u128::from(self.capacity) * NANOS);
    }

    /// How many of `wanted` bytes may go now (`Ok`, at least one), or how long to wait until
    /// some may (`Err`). Those given must be [`TokenBucket::spend`]t once written.
    pub fn allowance(&mut self, now: Instant, wanted: usize) -> Result<usize, Duration> {
        self.refill(now);
        let whole = (self.tokens_nanos / NANOS) as u64;
        // Wait for a useful amount rather than dribbling byte by byte: as much as asked, up to
        // what the bucket can hold.
        let useful = (wanted as u64).min(self.capacity);
        if whole >= useful {
            return Ok(usize::try_from(whole).unwrap_or(usize::MAX).min(wanted));
        }
        let missing = u128::from(useful) * NANOS - self.tokens_nanos;
        let nanos = missing.div_ceil(u128::from(self.rate));
        Err(Duration::from_nanos(
            u64::try_from(nanos).unwrap_or(u64::MAX),
        ))
    }

    /// Takes `bytes` that were written.
    pub fn spend(&mut self, bytes: usize) {
        self.tokens_nanos = self.tokens_nanos.saturating_sub(bytes as u128 * NANOS);
    }
}

/// A writer whose bytes pass at most at the bucket's rate.
pub struct Throttled<W> {
    inner: W,
    bucket: TokenBucket,
    /// Set while waiting for tokens.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<W> Throttled<W> {
    /// `rate` in bytes per second.
    pub fn new(inner: W, rate: NonZeroU64) -> Throttled<W> {
        Throttled {
            inner,
            bucket: TokenBucket::new(rate, Instant::now()),
            sleep: None,
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Throttled<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            if let Some(sleep) = this.sleep.as_mut() {
                std::task::ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            match this.bucket.allowance(Instant::now(), data.len()) {
                Ok(allowed) => {
                    let written = std::task::ready!(
                        Pin::new(&mut this.inner).poll_write(cx, &data[..allowed])
                    )?;
                    this.bucket.spend(written);
                    return Poll::Ready(Ok(written));
                }
                Err(wait) => {
                    this.sleep = Some(Box::pin(tokio::time::sleep(wait)));
                }
            }
        }
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

    fn rate(bytes_per_second: u64) -> NonZeroU64 {
        NonZeroU64::new(bytes_per_second).unwrap()
    }

    #[test]
    fn a_full_bucket_lets_a_tenth_of_a_second_through_then_paces() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(rate(10_000), start);
        assert_eq!(bucket.allowance(start, 50_000), Ok(1_000));
        bucket.spend(1_000);
        // Empty: a useful amount (the capacity) is 100 ms away.
        assert_eq!(
            bucket.allowance(start, 50_000),
            Err(Duration::from_millis(100))
        );
        // A small write waits only for its own bytes.
        assert_eq!(bucket.allowance(start, 10), Err(Duration::from_millis(1)));
        let later = start + Duration::from_millis(30);
        assert_eq!(bucket.allowance(later, 10), Ok(10));
        assert_eq!(
            bucket.allowance(later, 50_000),
            Err(Duration::from_millis(70))
        );
    }

    #[test]
    fn over_any_window_the_bytes_stay_at_the_rate() {
        // A writer that always wants more, driven by the bucket's own waits on a simulated clock.
        let start = Instant::now();
        let per_second = 123_456;
        let mut bucket = TokenBucket::new(rate(per_second), start);
        let mut now = start;
        let mut sent_at = Vec::new();
        while now < start + Duration::from_secs(20) {
            match bucket.allowance(now, 1 << 20) {
                Ok(n) => {
                    bucket.spend(n);
                    sent_at.push((now, n as u64));
                }
                Err(wait) => now += wait,
            }
        }
        for first in 1..15 {
            let from = start + Duration::from_secs(first);
            let to = from + Duration::from_secs(5);
            let sent: u64 = sent_at
                .iter()
                .filter(|(at, _)| *at >= from && *at < to)
                .map(|(_, n)| n)
                .sum();
            let expected = 5 * per_second;
            assert!(
                sent.abs_diff(expected) * 100 <= expected * 2,
                "{sent} bytes in the 5 s from {first} s, expected {expected}"
            );
        }
    }

    #[test]
    fn a_clock_that_goes_back_takes_nothing_and_rates_below_ten_still_pass() {
        let start = Instant::now() + Duration::from_secs(1);
        let mut bucket = TokenBucket::new(rate(3), start);
        assert_eq!(bucket.allowance(start, 100), Ok(1));
        bucket.spend(1);
        assert!(
            bucket
                .allowance(start - Duration::from_secs(1), 100)
                .is_err()
        );
        assert_eq!(bucket.allowance(start + Duration::from_secs(1), 100), Ok(1));
    }

    #[tokio::test]
    async fn a_throttled_writer_takes_as_long_as_the_rate_says() {
        use tokio::io::AsyncWriteExt;
        let mut writer = Throttled::new(Vec::new(), rate(100_000));
        let began = Instant::now();
        writer.write_all(&vec![7u8; 60_000]).await.unwrap();
        // The first 10,000 bytes were in the bucket; 50,000 more take half a second.
        let took = began.elapsed();
        assert!(
            took >= Duration::from_millis(490) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert_eq!(writer.inner.len(), 60_000);
    }
}
