//! Caps on concurrent work: in total and per IP address.
//!
//! One [`Limiter`] bounds all TCP connections (shared by the three TCP
//! services); others bound UDP upload sessions and UDP downloads. A full
//! limiter refuses at once; the caller answers in its protocol's own way.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a permit was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    /// The total cap is reached.
    #[error("the server is busy ({0} transfers at once); try again shortly")]
    Full(usize),
    /// This address's cap is reached.
    #[error("too many transfers from your address ({0} at once); try again shortly")]
    FullForIp(usize),
}

impl Refusal {
    /// The metrics' reason.
    pub(crate) fn reason(&self) -> RefusalReason {
        match self {
            Refusal::Full(_) => RefusalReason::Cap,
            Refusal::FullForIp(_) => RefusalReason::CapPerAddress,
        }
    }
}

/// Why a client was refused before its transfer started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefusalReason {
    /// The total connection or session cap.
    Cap,
    /// The per-address connection or session cap.
    CapPerAddress,
    /// The per-address upload quota.
    UploadQuota,
    /// The per-address udp_download budget.
    DownloadBudget,
    /// A udp_download request from outside `udp_download.allow`.
    NotAllowed,
}

pub(crate) const REASONS: [RefusalReason; 5] = [
    RefusalReason::Cap,
    RefusalReason::CapPerAddress,
    RefusalReason::UploadQuota,
    RefusalReason::DownloadBudget,
    RefusalReason::NotAllowed,
];

impl RefusalReason {
    /// The metrics label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            RefusalReason::Cap => "cap",
            RefusalReason::CapPerAddress => "cap_per_address",
            RefusalReason::UploadQuota => "upload_quota",
            RefusalReason::DownloadBudget => "download_budget",
            RefusalReason::NotAllowed => "not_allowed",
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Counts holders in total and per IP address. The caps are given with each
/// request, so a configuration reload changes them at once.
pub(crate) struct Limiter {
    counts: Mutex<Counts>,
    /// Woken whenever a permit is given back.
    released: tokio::sync::Notify,
}

impl Limiter {
    /// An empty limiter.
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new(Counts::default()),
            released: tokio::sync::Notify::new(),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // A panic while holding this lock cannot leave the counts inconsistent
        // (each update is one statement), so a poisoned lock is still usable.
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A permit for `ip` if fewer than `max_total` are held in all and fewer
    /// than `max_per_ip` by `ip`, or why not. The permit releases its slot on drop.
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
    ) -> Result<Permit, Refusal> {
        let ip = canonical(ip);
        let mut c = self.counts();
        if c.total >= max_total {
            return Err(Refusal::Full(max_total));
        }
        let n = c.per_ip.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            return Err(Refusal::FullForIp(max_per_ip));
        }
        *n += 1;
        c.total += 1;
        Ok(Permit {
            limiter: Arc::clone(self),
            ip,
        })
    }

    /// [`Limiter::try_acquire`], waiting until `deadline` for a permit to
    /// be given back when there is none (a connection the cap closed to make
    /// room ends after its last reply, within its linger).
    pub(crate) async fn acquire_by(
        self: &Arc<Self>,
        ip: IpAddr,
        max_total: usize,
        max_per_ip: usize,
        deadline: tokio::time::Instant,
    ) -> Result<Permit, Refusal> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before trying, so a release in between is not missed.
            released.as_mut().enable();
            match self.try_acquire(ip, max_total, max_per_ip) {
                Ok(permit) => return Ok(permit),
                Err(why) => {
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return Err(why);
                    }
                }
            }
        }
    }

    /// Holders right now.
    pub(crate) fn in_use(&self) -> usize {
        self.counts().total
    }

    /// Holders from `ip`'s address right now.
    pub(crate) fn held_by(&self, ip: IpAddr) -> usize {
        self.counts()
            .per_ip
            .get(&canonical(ip))
            .copied()
            .unwrap_or(0)
    }
}

/// The address a cap counts: `::ffff:a.b.c.d` is `a.b.c.d` (a dual-stack
/// socket counts one client once), and an IPv6 address is its /64 (one host,
/// or one LAN, gets a /64 and can pick any address in it).
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(
                v6.to_bits() & !((1u128 << 64) - 1),
            )),
        },
        v4 => v4,
    }
}

/// Bytes each address may be sent per window, sans-IO: a token bucket per
/// [`canonical`] address holding `capacity` bytes, refilled evenly over
/// `window`; time is an input. At most [`ByteBudget::MAX_TRACKED`] addresses
/// are tracked (≈ 4 MiB); past that, full buckets are forgotten first, and a
/// new address is refused if none is.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    capacity: u64,
    window: std::time::Duration,
    buckets: HashMap<IpAddr, (f64, tokio::time::Instant)>,
}

impl ByteBudget {
    /// Addresses tracked at most.
    pub(crate) const MAX_TRACKED: usize = 65_536;

    /// `capacity` bytes per address per `window`.
    pub(crate) fn new(capacity: u64, window: std::time::Duration) -> ByteBudget {
        ByteBudget {
            capacity,
            window,
            buckets: HashMap::new(),
        }
    }

    fn level(&self, now: tokio::time::Instant, (left, at): (f64, tokio::time::Instant)) -> f64 {
        let rate = self.capacity as f64 / self.window.as_secs_f64().max(1e-9);
        (left + rate * now.saturating_duration_since(at).as_secs_f64()).min(self.capacity as f64)
    }

    /// Takes `bytes` from `ip`'s budget at `now` if it holds them all; else
    /// `Err` with how long until it would.
    pub(crate) fn take(
        &mut self,
        now: tokio::time::Instant,
        ip: IpAddr,
        bytes: u64,
    ) -> Result<(), std::time::Duration> {
        let ip = canonical(ip);
        let level = match self.buckets.get(&ip) {
            Some(b) => self.level(now, *b),
            None => {
                if self.buckets.len() >= Self::MAX_TRACKED {
                    let full: Vec<IpAddr> = self
                        .buckets
                        .iter()
                        .filter(|(_, b)| self.level(now, **b) >= self.capacity as f64)
                        .map(|(ip, _)| *ip)
                        .collect();
                    for f in full {
                        self.buckets.remove(&f);
                    }
                    if self.buckets.len() >= Self::MAX_TRACKED {
                        // Forget the fullest one rather than lock a newcomer out.
                        let fullest = self
                            .buckets
                            .iter()
                            .max_by(|a, b| self.level(now, *a.1).total_cmp(&self.level(now, *b.1)))
                            .map(|(ip, _)| *ip);
                        if let Some(ip) = fullest {
                            self.buckets.remove(&ip);
                        }
                    }
                }
                self.capacity as f64
            }
        };
        if (bytes as f64) > level {
            let rate = self.capacity as f64 / self.window.as_secs_f64().max(1e-9);
            let wait = if bytes > self.capacity {
                self.window
            } else {
                std::time::Duration::from_secs_f64((bytes as f64 - level) / rate)
            };
            self.buckets.insert(ip, (level, now));
            return Err(wait);
        }
        self.buckets.insert(ip, (level - bytes as f64, now));
        Ok(())
    }

    /// Whether `ip`'s budget holds `bytes` now (taking nothing), or how long
    /// until it would.
    pub(crate) fn check(
        &self,
        now: tokio::time::Instant,
        ip: IpAddr,
        bytes: u64,
    ) -> Result<(), std::time::Duration> {
        let ip = canonical(ip);
        let level = self
            .buckets
            .get(&ip)
            .map_or(self.capacity as f64, |b| self.level(now, *b));
        if (bytes as f64) <= level {
            return Ok(());
        }
        if bytes > self.capacity {
            return Err(self.window);
        }
        let rate = self.capacity as f64 / self.window.as_secs_f64().max(1e-9);
        Err(std::time::Duration::from_secs_f64(
            (bytes as f64 - level) / rate,
        ))
    }

    /// Returns `n` taken a moment ago (up to the capacity).
    pub(crate) fn give_back(&mut self, now: tokio::time::Instant, ip: IpAddr, n: u64) {
        let ip = canonical(ip);
        if let Some(b) = self.buckets.get(&ip).copied() {
            let level = (self.level(now, b) + n as f64).min(self.capacity as f64);
            self.buckets.insert(ip, (level, now));
        }
    }

    /// Takes `bytes` whatever is left (down to empty): for what is known only
    /// once a transfer ends.
    pub(crate) fn spend(&mut self, now: tokio::time::Instant, ip: IpAddr, bytes: u64) {
        let ip = canonical(ip);
        let level = self
            .buckets
            .get(&ip)
            .map_or(self.capacity as f64, |b| self.level(now, *b));
        if self.buckets.len() < Self::MAX_TRACKED || self.buckets.contains_key(&ip) {
            self.buckets
                .insert(ip, ((level - bytes as f64).max(0.0), now));
        }
    }
}

/// Per-address upload quotas over every upload protocol: files and bytes per
/// window, both [`ByteBudget`]s.
pub(crate) struct UploadQuota {
    inner: Mutex<(ByteBudget, ByteBudget)>,
}

impl UploadQuota {
    /// `files` uploads and `bytes` bytes per address per `window`.
    pub(crate) fn new(files: usize, bytes: u64, window: std::time::Duration) -> UploadQuota {
        UploadQuota {
            inner: Mutex::new((
                ByteBudget::new(files as u64, window),
                ByteBudget::new(bytes, window),
            )),
        }
    }

    /// One more upload of `size` announced bytes (0 when not announced) from
    /// `ip` at `now`, or how long until it would fit.
    pub(crate) fn admit(
        &self,
        now: tokio::time::Instant,
        ip: IpAddr,
        size: u64,
    ) -> Result<(), std::time::Duration> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (files, bytes) = &mut *g;
        files.take(now, ip, 1)?;
        // An unannounced size (0) still needs something left.
        if let Err(wait) = bytes.take(now, ip, size.max(1)) {
            files.give_back(now, ip, 1);
            return Err(wait);
        }
        Ok(())
    }

    /// Whether [`UploadQuota::admit`] would let the upload in now, taking nothing.
    pub(crate) fn check(
        &self,
        now: tokio::time::Instant,
        ip: IpAddr,
        size: u64,
    ) -> Result<(), std::time::Duration> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.check(now, ip, 1)?;
        g.1.check(now, ip, size.max(1))
    }

    /// One upload of `size` bytes that completed, charged now whatever is
    /// left (down to empty): for a protocol whose source cannot be proved
    /// (UDP), an upload costs its address only once it is stored, so a
    /// forger's sessions that never complete cost the address nothing.
    pub(crate) fn charge(&self, now: tokio::time::Instant, ip: IpAddr, size: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.spend(now, ip, 1);
        g.1.spend(now, ip, size);
    }

    /// Bytes an upload without an announced size turned out to have.
    pub(crate) fn spend(&self, now: tokio::time::Instant, ip: IpAddr, size: u64) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.spend(now, ip, size);
    }
}

/// Connections waiting for their next request, oldest first, so that at the
/// connection cap the longest-idle one can be closed to make room before a
/// new client is refused (a crowd of idle connections cannot hold the caps).
#[derive(Default)]
pub(crate) struct IdleConnections {
    /// The last sequence number given, and the waiting connections by it.
    inner: Mutex<(u64, IdleMap)>,
}

/// Idle connections by the order they became idle: address and close token.
type IdleMap = std::collections::BTreeMap<u64, (IpAddr, tokio_util::sync::CancellationToken)>;

impl IdleConnections {
    /// A connection from `ip` starts waiting; it is told to close through
    /// the guard's token; dropping the guard (a request came) takes it off.
    pub(crate) fn enter(self: &Arc<Self>, ip: IpAddr) -> IdleGuard {
        let token = tokio_util::sync::CancellationToken::new();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0 += 1;
        let seq = g.0;
        g.1.insert(seq, (canonical(ip), token.clone()));
        IdleGuard {
            set: Arc::clone(self),
            seq,
            token,
        }
    }

    /// Connections waiting now.
    pub(crate) fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1.len()
    }

    /// Tells the longest-idle connection (from `ip`'s address, if given) to
    /// close; false if there is none.
    pub(crate) fn evict_oldest(&self, ip: Option<IpAddr>) -> bool {
        let ip = ip.map(canonical);
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let victim =
            g.1.iter()
                .find(|(_, (from, _))| ip.map_or(true, |ip| *from == ip))
                .map(|(seq, _)| *seq);
        match victim.and_then(|seq| g.1.remove(&seq)) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

/// A connection's place in [`IdleConnections`].
pub(crate) struct IdleGuard {
    set: Arc<IdleConnections>,
    seq: u64,
    token: tokio_util::sync::CancellationToken,
}

impl IdleGuard {
    /// Cancelled when the connection must close to make room.
    pub(crate) fn evicted(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }
}

impl Drop for IdleGuard {
    fn drop(&mut self) {
        let mut g = self.set.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1.remove(&self.seq);
    }
}

/// One slot of a [`Limiter`].
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        {
            let mut c = self.limiter.counts();
            c.total -= 1;
            if let Some(n) = c.per_ip.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    c.per_ip.remove(&self.ip);
                }
            }
        }
        self.limiter.released.notify_waiters();
    }
}

/// The whole seconds to tell a refused client to wait: rounded up (a wait
/// of 1.8 s told as "1 s" would be refused again), at least 1.
pub(crate) fn retry_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_client_is_told_to_wait_long_enough() {
        use std::time::Duration;
        assert_eq!(retry_secs(Duration::from_millis(1800)), 2);
        assert_eq!(retry_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_secs(Duration::ZERO), 1);
        assert_eq!(retry_secs(Duration::from_millis(1)), 1);
    }

    #[test]
    fn caps_total_and_per_ip() {
        let l = Limiter::new();
        let l2 = Arc::clone(&l);
        let acq = move |ip| l2.try_acquire(ip, 3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = acq(a).unwrap();
        let _p2 = acq(a).unwrap();
        assert_eq!(acq(a).err(), Some(Refusal::FullForIp(2)));
        assert_eq!(
            acq("::ffff:10.0.0.1".parse().unwrap()).err(),
            Some(Refusal::FullForIp(2))
        );
        let _p3 = acq(b).unwrap();
        assert_eq!(acq(b).err(), Some(Refusal::Full(3)));
        drop(p1);
        let _p4 = acq(a).unwrap();
        assert_eq!(l.in_use(), 3);
        drop(_p4);
        assert_eq!(l.in_use(), 2);
    }
}

/// Replies per second a UDP service sends to datagrams that start no
/// transfer (errors, sums). UDP sources can be forged, so these replies are
/// capped in total: a flood of forged datagrams reflects at most this many
/// replies a second (200 × at most 256 bytes ≈ 50 KiB/s), while a class of
/// students stays far below it. Datagrams over the budget get no reply.
pub const REPLIES_PER_SECOND: u32 = 200;

/// A per-second budget of replies (see [`REPLIES_PER_SECOND`]); time is an input.
pub(crate) struct ReplyBudget {
    per_second: u32,
    /// When the current one-second window began, and the replies in it.
    window: Mutex<Option<(tokio::time::Instant, u32)>>,
}

impl ReplyBudget {
    /// A budget of `per_second` replies in each one-second window.
    pub(crate) fn new(per_second: u32) -> ReplyBudget {
        ReplyBudget {
            per_second,
            window: Mutex::new(None),
        }
    }

    /// Whether one more reply at `now` fits in its second's budget (and counts it).
    pub(crate) fn allow(&self, now: tokio::time::Instant) -> bool {
        // The lock guards two numbers updated together; poison cannot break them.
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let (start, sent) = w.get_or_insert((now, 0));
        if now.saturating_duration_since(*start) >= std::time::Duration::from_secs(1) {
            (*start, *sent) = (now, 0);
        }
        if *sent < self.per_second {
            *sent += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn byte_budgets_per_address_refill_over_the_window() {
        let t0 = tokio::time::Instant::now();
        let mut b = ByteBudget::new(1000, std::time::Duration::from_secs(10));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(b.take(t0, a, 600), Ok(()));
        assert_eq!(b.take(t0, a, 500), Err(std::time::Duration::from_secs(1)));
        // Another address has its own budget; one /64 is one address.
        assert_eq!(b.take(t0, "10.0.0.2".parse().unwrap(), 1000), Ok(()));
        assert_eq!(b.take(t0, "2001:db8::1".parse().unwrap(), 1000), Ok(()));
        assert!(b.take(t0, "2001:db8::ffff:2".parse().unwrap(), 1).is_err());
        assert_eq!(b.take(t0, "2001:db8:0:1::1".parse().unwrap(), 1), Ok(()));
        // 100 bytes a second come back.
        assert_eq!(
            b.take(t0 + std::time::Duration::from_secs(1), a, 500),
            Ok(())
        );
        assert!(b.take(t0, a, 5000).is_err(), "never more than the capacity");
    }

    #[test]
    fn an_ipv6_64_is_one_address() {
        let a = canonical("2001:db8:1:2:aaaa::1".parse().unwrap());
        assert_eq!(a, canonical("2001:db8:1:2:ffff::9".parse().unwrap()));
        assert_ne!(a, canonical("2001:db8:1:3::1".parse().unwrap()));
        assert_eq!(
            canonical("::ffff:10.1.2.3".parse().unwrap()),
            "10.1.2.3".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn a_budget_caps_replies_per_second() {
        let t0 = tokio::time::Instant::now();
        let b = ReplyBudget::new(3);
        assert_eq!((0..10).filter(|_| b.allow(t0)).count(), 3);
        let later = t0 + std::time::Duration::from_millis(999);
        assert!(!b.allow(later), "the same second");
        let next = t0 + std::time::Duration::from_secs(1);
        assert_eq!((0..10).filter(|_| b.allow(next)).count(), 3);
    }
}
