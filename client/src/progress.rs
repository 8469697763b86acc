//! How a transfer reports its progress (the CLI draws bars from it).

/// How a transfer reports progress. All methods default to doing nothing.
pub trait Progress: Send + Sync {
    /// A transfer of `total` bytes (if known) starts, named `label`.
    fn start(&self, _label: &str, _total: Option<u64>) {}
    /// `n` more bytes moved.
    fn advance(&self, _n: u64) {}
    /// The transfer restarts from zero (a UDP retry).
    fn restart(&self) {}
    /// Attempt `attempt` of `of` starts, because the last one ended with `why`.
    fn retry(&self, _attempt: usize, _of: usize, _why: &str) {}
    /// The transfer is over.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
