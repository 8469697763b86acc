//! The control thread: a runtime of its own for the `signal` listener, so a
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

impl Control {
    /// Starts the thread and its runtime.
    pub(crate) fn start() -> std::io::Result<Control> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let attention = crate::attention::Shared::new();
        handle.spawn(std::sync::Arc::clone(&attention).beat());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(CONTROL_THREAD.into())
            .spawn(move || {
                raise_priority();
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

/// How much ahead of the rest of the box the control thread runs when it
/// may (root, or CAP_SYS_NICE): nice -10, weighted about 9 to 1 against a
/// CPU-bound process at 0, so a PIN and a handout client's pauses are seen
/// on a busy 2-core box (docs/BENCHMARKS.md, the lab day).
const CONTROL_NICE: i32 = -10;

/// Gives the calling thread [`CONTROL_NICE`], if allowed; else it runs at
/// the process's own priority, and says so at debug.
fn raise_priority() {
    let tid = rustix::thread::gettid();
    if let Err(e) = rustix::process::setpriority_process(Some(tid), CONTROL_NICE) {
        tracing::debug!(error = %e, "the control thread keeps the process's priority");
    }
}
