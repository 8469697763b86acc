//! A lossy UDP proxy for tests: between a client and a daemon it drops,
//! duplicates, reorders and delays datagrams, in both directions, decided by
//! a seeded RNG so a failing run can be replayed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::Rng;

/// How hostile the network is. Probabilities are per datagram.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Dropped.
    pub loss: f64,
    /// Sent twice.
    pub duplicate: f64,
    /// Held back and sent after the next datagram.
    pub reorder: f64,
    /// Delayed (by up to `max_delay`).
    pub delay: f64,
    /// Longest delay.
    pub max_delay: Duration,
    /// The RNG seed.
    pub seed: u64,
}

impl Faults {
    /// Only loss.
    pub fn loss(loss: f64, seed: u64) -> Faults {
        Faults {
            loss,
            duplicate: 0.0,
            reorder: 0.0,
            delay: 0.0,
            max_delay: Duration::ZERO,
            seed,
        }
    }

    /// Loss, plus duplicates, reordering and delays (up to 20 ms), each at
    /// half the loss rate.
    pub fn everything(loss: f64, seed: u64) -> Faults {
        Faults {
            loss,
            duplicate: loss / 2.0,
            reorder: loss / 2.0,
            delay: loss / 2.0,
            max_delay: Duration::from_millis(20),
            seed,
        }
    }
}

/// What the proxy did.
#[derive(Debug, Default)]
pub struct Counts {
    /// Datagrams received from either side.
    pub seen: AtomicU64,
    /// Dropped.
    pub dropped: AtomicU64,
    /// Duplicated.
    pub duplicated: AtomicU64,
    /// Reordered.
    pub reordered: AtomicU64,
}

/// A running proxy; clients send to [`LossyProxy::addr`].
pub struct LossyProxy {
    /// Where clients send.
    pub addr: SocketAddr,
    /// What it did so far.
    pub counts: Arc<Counts>,
    task: JoinHandle<()>,
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The datagram a direction holds back to reorder it.
type Held = Arc<Mutex<Option<Vec<u8>>>>;

struct Shared {
    faults: Faults,
    rng: Mutex<Rng>,
    counts: Arc<Counts>,
}

impl Shared {
    /// Sends `data` to `to` on `sock`, after the faults have had their say.
    /// `held` is this direction's datagram kept back for reordering.
    async fn forward(
        self: &Arc<Self>,
        sock: &Arc<UdpSocket>,
        to: SocketAddr,
        data: Vec<u8>,
        held: &Mutex<Option<Vec<u8>>>,
    ) {
        self.counts.seen.fetch_add(1, Ordering::Relaxed);
        let (drop_it, dup, reorder, delay) = {
            let mut r = self.rng.lock().unwrap();
            let f = &self.faults;
            let delay = if r.f64() < f.delay {
                f.max_delay.mul_f64(r.f64())
            } else {
                Duration::ZERO
            };
            (
                r.f64() < f.loss,
                r.f64() < f.duplicate,
                r.f64() < f.reorder,
                delay,
            )
        };
        if drop_it {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut batch = Vec::new();
        if reorder {
            self.counts.reordered.fetch_add(1, Ordering::Relaxed);
            if let Some(prev) = held.lock().unwrap().replace(data) {
                batch.push(prev);
            }
        } else {
            batch.push(data);
            if let Some(prev) = held.lock().unwrap().take() {
                batch.push(prev);
            }
        }
        if dup {
            self.counts.duplicated.fetch_add(1, Ordering::Relaxed);
            if let Some(first) = batch.first().cloned() {
                batch.push(first);
            }
        }
        let sock = Arc::clone(sock);
        let send = async move {
            for d in batch {
                let _ = sock.send_to(&d, to).await;
            }
        };
        if delay.is_zero() {
            send.await;
        } else {
            tokio::spawn(async move {
                // Real: a network's delay, between real sockets.
                tokio::time::sleep(delay).await;
                send.await;
            });
        }
    }
}

impl LossyProxy {
    /// Starts a proxy in front of `upstream`.
    pub async fn start(upstream: SocketAddr, faults: Faults) -> LossyProxy {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        crate::set_rcvbuf(&front);
        let addr = front.local_addr().expect("addr");
        let counts = Arc::new(Counts::default());
        let shared = Arc::new(Shared {
            faults,
            rng: Mutex::new(Rng::with_seed(faults.seed)),
            counts: Arc::clone(&counts),
        });
        let task = tokio::spawn(async move {
            // One upstream socket per client, so the daemon sees each client
            // as its own peer, and its replies find their way back.
            let mut clients: HashMap<SocketAddr, (Arc<UdpSocket>, Held)> = HashMap::new();
            let mut to_server_held: HashMap<SocketAddr, Held> = HashMap::new();
            let mut buf = vec![0u8; 65_536];
            loop {
                let Ok((n, client)) = front.recv_from(&mut buf).await else {
                    continue;
                };
                let (up, _) = clients
                    .entry(client)
                    .or_insert_with(|| {
                        let std_sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
                        std_sock.set_nonblocking(true).expect("nonblocking");
                        let up = Arc::new(UdpSocket::from_std(std_sock).expect("tokio socket"));
                        crate::set_rcvbuf(&up);
                        let back_held = Arc::new(Mutex::new(None));
                        // Replies: daemon → this client, through the faults.
                        let (up2, front2, shared2, held2) = (
                            Arc::clone(&up),
                            Arc::clone(&front),
                            Arc::clone(&shared),
                            Arc::clone(&back_held),
                        );
                        tokio::spawn(async move {
                            let mut b = vec![0u8; 65_536];
                            while let Ok((n, _)) = up2.recv_from(&mut b).await {
                                shared2
                                    .forward(&front2, client, b[..n].to_vec(), &held2)
                                    .await;
                            }
                        });
                        (up, back_held)
                    })
                    .clone();
                let held = Arc::clone(to_server_held.entry(client).or_default());
                shared
                    .forward(&up, upstream, buf[..n].to_vec(), &held)
                    .await;
            }
        });
        LossyProxy { addr, counts, task }
    }
}
