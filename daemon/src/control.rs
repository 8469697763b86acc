//! The control thread (and the lab page's, built the same way): a runtime
//! of its own for the `signal` listener, so a
//! `PIN` (the health check) is answered at once even while hundreds of
//! transfers keep the main runtime's queue full. A signal connection stays
//! here while it only pings or speaks the handout's pause framing (whose
//! pauses are seen only by a reader that is there for them: the disk work
//! of those uploads runs on the main runtime); its first request in ferry's
//! own framing moves it to the main runtime (`signal::handover`).

use std::future::Future;

/// The control thread's name (how a task knows it runs there).
const CONTROL_THREAD: &str = "ferry-control";

/// Whether the caller runs on the control thread.
pub(crate) fn on_control_thread() -> bool {
    std::thread::current().name() == Some(CONTROL_THREAD)
}

/// The running control thread; dropping it lets the thread end.
pub(crate) struct Control {
    handle: tokio::runtime::Handle,
    /// The thread's heartbeat (see [`crate::attention`]).
    pub(crate) attention: std::sync::Arc<crate::attention::Shared>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The lab page's thread: the page and the API are rendered there, apart
/// from the transfers, and yield to them (nice +5, which any process may
/// take): a crowd at the page never slows an upload.
const PAGE_THREAD: &str = "ferry-page";

/// The page thread's niceness, relative to the process's: below the transfers'.
const PAGE_NICE: i32 = 5;

/// udp_upload's thread: it drains the socket ahead of the transfers' work
/// ([`UDP_NICE`]), so that a crowd of
/// handout clients' datagrams does not wait in the socket buffer for the
/// main runtime (the lab day, docs/BENCHMARKS.md). Its sessions run here
/// too, their file work on this runtime's blocking threads.
const UDP_THREAD: &str = "ferry-udp";

impl Control {
    /// Starts udp_upload's receive thread and its runtime.
    pub(crate) fn start_udp() -> std::io::Result<Control> {
        Self::start_thread(UDP_THREAD, UDP_NICE)
    }

    /// Starts the control thread and its runtime.
    pub(crate) fn start() -> std::io::Result<Control> {
        Self::start_thread(CONTROL_THREAD, CONTROL_NICE)
    }

    /// Starts the lab page's thread and its runtime.
    pub(crate) fn start_page() -> std::io::Result<Control> {
        Self::start_thread(PAGE_THREAD, PAGE_NICE)
    }

    fn start_thread(name: &'static str, nice: i32) -> std::io::Result<Control> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            // Its file work (udp_upload's sessions) on a few threads, which
            // inherit its priority: a burst of sessions must not start
            // hundreds of them ahead of everything else.
            .max_blocking_threads(BLOCKING_THREADS)
            .build()?;
        let handle = runtime.handle().clone();
        let attention = crate::attention::Shared::new();
        handle.spawn(std::sync::Arc::clone(&attention).beat());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                set_priority(nice);
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(Control {
            handle,
            attention,
            _stop: stop,
        })
    }

    /// Runs `task` on the control thread, tracked by `tracker`.
    pub(crate) fn spawn<F>(&self, tracker: &tokio_util::task::TaskTracker, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tracker.spawn_on(task, &self.handle);
    }
}

/// udp_upload's thread's niceness, relative to the process's: ahead of
/// the transfers (its handout client waits 1 s for each reply), behind the
/// control thread (a burst of forged `file_info`s must not delay a PIN as
/// much: during the attacks table's 2,100-datagram burst PIN p99 was
/// 31-36 ms with this thread at the control thread's own priority, 4-25 ms
/// here, 10-13 ms with udp_upload on the main runtime).
const UDP_NICE: i32 = -5;

/// Blocking threads of each of these runtimes, at most: the main
/// runtime's number (with 8, a lab day's handout udp_uploads were 44 of 60
/// stored in time, with 16, 60 of 60).
const BLOCKING_THREADS: usize = 16;

/// How much ahead of the rest of ferryd the control thread runs when it may
/// (root, CAP_SYS_NICE, or an `RLIMIT_NICE` that allows it: the unit's
/// `LimitNICE=`): 10 below the process's niceness, weighted about 9 to 1
/// against a thread at the process's, so a PIN and a handout client's
/// pauses are seen on a busy 2-core box (docs/BENCHMARKS.md, the lab day).
const CONTROL_NICE: i32 = -10;

/// Sets the calling thread's niceness to the process's plus `delta`, if
/// allowed (raising priority needs root, CAP_SYS_NICE or `RLIMIT_NICE`);
/// else it keeps the process's, and says so at debug.
fn set_priority(delta: i32) {
    let base = rustix::process::getpriority_process(None).unwrap_or(0);
    let nice = (base + delta).clamp(-20, 19);
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), nice) {
        tracing::debug!(error = %e, nice, "a thread keeps the process's priority");
    }
}
