//! `--timeout` over a whole exchange, not one read: a server that drips a
//! byte every 2 s under a 3 s timeout is cut at 3 s, not never.
//!
//! [`Watch`] is the rule (sans-IO, time as an input): each write starts an
//! exchange; while the client waits on the server, `timeout` passes without
//! [`MIN_PROGRESS`] bytes arriving and the wait fails. [`Watched`] is a
//! `TcpStream` that applies it to every read, so every protocol module gets
//! it by reading as before.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// Bytes a server must send per `timeout` while the client waits on it
/// (1 KiB: a handout piece, a reply header and name; an honest server sends
/// a frame at once).
pub(crate) const MIN_PROGRESS: u64 = 1024;

/// The rule: where an exchange with the server stands.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watch {
    timeout: Duration,
    /// The start of the exchange, or when it last made [`MIN_PROGRESS`].
    since: Instant,
    /// Bytes read since then.
    got: u64,
}

impl Watch {
    pub(crate) fn new(now: Instant, timeout: Duration) -> Watch {
        Watch {
            timeout,
            since: now,
            got: 0,
        }
    }

    /// The client sent something at `now`: a new exchange starts.
    pub(crate) fn on_write(&mut self, now: Instant) {
        self.since = now;
        self.got = 0;
    }

    /// `n` bytes arrived at `now`.
    pub(crate) fn on_read(&mut self, now: Instant, n: usize) {
        self.got += n as u64;
        if self.got >= MIN_PROGRESS {
            self.since = now;
            self.got = 0;
        }
    }

    /// A wait on the server that is still going at this instant fails.
    pub(crate) fn deadline(&self) -> Instant {
        self.since + self.timeout
    }
}

/// A TCP stream under a [`Watch`].
pub struct Watched {
    inner: TcpStream,
    watch: Watch,
    sleep: Pin<Box<Sleep>>,
}

impl Watched {
    pub(crate) fn new(inner: TcpStream, timeout: Duration) -> Watched {
        let watch = Watch::new(Instant::now(), timeout);
        Watched {
            inner,
            sleep: Box::pin(tokio::time::sleep_until(watch.deadline())),
            watch,
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                this.watch.on_read(Instant::now(), n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // Waiting on the server: the exchange's deadline bounds it.
            Poll::Pending => {
                let deadline = this.watch.deadline();
                if this.sleep.deadline() != deadline {
                    this.sleep.as_mut().reset(deadline);
                }
                match this.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the server sent too little for too long",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                this.watch.on_write(Instant::now());
            }
        }
        r
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_drip_never_moves_the_deadline() {
        let t0 = Instant::now();
        let mut w = Watch::new(t0, ms(3000));
        // One byte every 2 s: 40 s of it is still the first exchange.
        for i in 1..=20 {
            w.on_read(t0 + ms(2000 * i), 1);
        }
        assert_eq!(w.deadline(), t0 + ms(3000));
    }

    #[test]
    fn progress_and_writes_move_it() {
        let t0 = Instant::now();
        let mut w = Watch::new(t0, ms(3000));
        w.on_read(t0 + ms(1000), 1000);
        assert_eq!(w.deadline(), t0 + ms(3000));
        w.on_read(t0 + ms(2000), 24);
        assert_eq!(
            w.deadline(),
            t0 + ms(5000),
            "1 KiB arrived: a fresh timeout"
        );
        w.on_read(t0 + ms(2500), 10);
        w.on_write(t0 + ms(4000));
        assert_eq!(
            w.deadline(),
            t0 + ms(7000),
            "a new request: a fresh exchange"
        );
        w.on_read(t0 + ms(4100), 1);
        assert_eq!(w.deadline(), t0 + ms(7000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_dripping_server_is_cut_at_the_timeout() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            loop {
                if s.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(ms(2000)).await;
            }
        });
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut w = Watched::new(stream, ms(3000));
        let t0 = Instant::now();
        let mut sink = Vec::new();
        let err = w.read_to_end(&mut sink).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(t0.elapsed(), ms(3000));
        assert_eq!(sink, b"xx");
    }
}
