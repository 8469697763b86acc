//! How promptly the control thread has been running, so the handout framing
//! knows when a pause may have been lost while ferry was not reading.
//!
//! The handout's signal client separates its messages only by pauses of
//! 0.1 s. A pause is seen as a gap between reads, so it is lost when bytes
//! on both sides of it wait in the socket together: while ferryd is stopped,
//! or its thread starved. A heartbeat on the control thread (where handout
//! connections are read) tells those moments: a beat that comes late means
//! the thread did not run in between. [`Attention`] is the rule, with time
//! as an input; [`Shared`] the heartbeat's driver, which beats only while a
//! connection watches.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How often the heartbeat runs while a connection watches (5 ms: a stall of
/// more than two beats, 10 ms, is noticed; the handout's pauses are 100 ms).
pub(crate) const BEAT: Duration = Duration::from_millis(5);

/// The heartbeat's record (sans-IO).
#[derive(Debug, Clone)]
pub(crate) struct Attention {
    interval: Duration,
    last_beat: Instant,
    /// The last stall: from the last beat before it to the beat after it.
    stall: Option<(Instant, Instant)>,
}

impl Attention {
    /// A heartbeat of `interval`, running from `now`.
    pub(crate) fn new(now: Instant, interval: Duration) -> Attention {
        Attention {
            interval,
            last_beat: now,
            stall: None,
        }
    }

    /// The heartbeat ran at `now`. A beat later than one interval past its
    /// time means the thread did not run since the last one.
    pub(crate) fn on_beat(&mut self, now: Instant) {
        if self.overdue(now) {
            self.stall = Some((self.last_beat, now));
        }
        self.last_beat = now;
    }

    /// The heartbeat starts again at `now` after a rest (nobody watched):
    /// the rest was no stall.
    pub(crate) fn restart(&mut self, now: Instant) {
        self.last_beat = now;
        self.stall = None;
    }

    fn overdue(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last_beat) > 2 * self.interval
    }

    /// Whether bytes read at `now`, which arrived after `since` (when the
    /// socket was last read empty), may have waited unread for `limit` or
    /// longer: the thread is just back from a stall (the beat is overdue,
    /// or the last stall ended within a beat of `now`) that began more than
    /// `limit` before `now` and after `since`.
    pub(crate) fn may_have_waited(&self, now: Instant, since: Instant, limit: Duration) -> bool {
        let from = if self.overdue(now) {
            Some(self.last_beat)
        } else {
            self.stall
                .filter(|&(_, end)| end + self.interval >= now)
                .map(|(start, _)| start)
        };
        from.is_some_and(|start| now.saturating_duration_since(start.max(since)) >= limit)
    }
}

/// The heartbeat of one thread, shared by the connections it serves.
pub(crate) struct Shared {
    state: Mutex<Attention>,
    watchers: AtomicUsize,
    wake: Notify,
}

impl Shared {
    /// A heartbeat at rest; [`Shared::beat`] drives it.
    pub(crate) fn new() -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(Attention::new(Instant::now(), BEAT)),
            watchers: AtomicUsize::new(0),
            wake: Notify::new(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Attention> {
        // The state is plain data, whole after any panic: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs the heartbeat on the current thread while anyone watches.
    pub(crate) async fn beat(self: Arc<Self>) {
        loop {
            if self.watchers.load(Ordering::Acquire) == 0 {
                self.wake.notified().await;
                continue;
            }
            tokio::time::sleep(BEAT).await;
            self.state().on_beat(Instant::now());
        }
    }

    /// Starts watching (the heartbeat runs until every watch is dropped).
    pub(crate) fn watch(self: &Arc<Self>) -> Watch {
        if self.watchers.fetch_add(1, Ordering::AcqRel) == 0 {
            self.state().restart(Instant::now());
            self.wake.notify_one();
        }
        Watch(Arc::clone(self))
    }
}

/// A connection watching the heartbeat of the thread it runs on.
pub(crate) struct Watch(Arc<Shared>);

impl Watch {
    /// See [`Attention::may_have_waited`].
    pub(crate) fn may_have_waited(&self, now: Instant, since: Instant, limit: Duration) -> bool {
        self.0.state().may_have_waited(now, since, limit)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.watchers.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_millis(20);

    fn ms(t0: Instant, n: u64) -> Instant {
        t0 + Duration::from_millis(n)
    }

    #[test]
    fn a_thread_that_beats_on_time_never_lets_bytes_wait() {
        let t0 = Instant::now();
        let mut a = Attention::new(t0, BEAT);
        for i in 1..=100 {
            a.on_beat(ms(t0, 5 * i));
        }
        // Read 3 ms after the last beat, the socket empty 400 ms before.
        assert!(!a.may_have_waited(ms(t0, 503), t0, LIMIT));
    }

    #[test]
    fn an_overdue_beat_means_the_bytes_may_have_waited_since_the_last() {
        let t0 = Instant::now();
        let mut a = Attention::new(t0, BEAT);
        a.on_beat(ms(t0, 5));
        // Stopped from 5 ms to 155 ms; the read runs before the beat does.
        assert!(a.may_have_waited(ms(t0, 155), t0, LIMIT));
        // But not if the socket was read empty only just before the read.
        assert!(!a.may_have_waited(ms(t0, 155), ms(t0, 140), LIMIT));
        // 10 ms late is not yet overdue; 11 ms is, but waited only 11 ms.
        assert!(!a.may_have_waited(ms(t0, 15), t0, LIMIT));
        assert!(!a.may_have_waited(ms(t0, 16), t0, LIMIT));
    }

    #[test]
    fn a_stall_the_beat_saw_counts_for_reads_right_after_it() {
        let t0 = Instant::now();
        let mut a = Attention::new(t0, BEAT);
        a.on_beat(ms(t0, 5));
        // The beat runs first after the stall, the read a moment later.
        a.on_beat(ms(t0, 155));
        assert!(a.may_have_waited(ms(t0, 156), t0, LIMIT));
        // Reads well after the thread came back are prompt again.
        a.on_beat(ms(t0, 160));
        a.on_beat(ms(t0, 165));
        assert!(!a.may_have_waited(ms(t0, 166), t0, LIMIT));
        // A stall shorter than the limit lets nothing wait that long.
        let mut a = Attention::new(t0, BEAT);
        a.on_beat(ms(t0, 18));
        assert!(!a.may_have_waited(ms(t0, 18), t0, LIMIT));
    }

    #[test]
    fn a_rest_without_watchers_is_no_stall() {
        let t0 = Instant::now();
        let mut a = Attention::new(t0, BEAT);
        a.restart(ms(t0, 60_000));
        assert!(!a.may_have_waited(ms(t0, 60_001), t0, LIMIT));
    }
}
