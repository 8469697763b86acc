//! The ledger: one JSON line per stored file, appended to
//! `<storage>/.ferry-ledger.jsonl` as the upload is acknowledged.
//!
//! - Append-only: a line is written whole with one `write` on an
//!   `O_APPEND` file, so a crash (even `kill -9`) leaves every line written
//!   so far, and at worst one cut line at the end, which reading skips.
//!   A thread of its own syncs it to disk at most a second later.
//! - Bounded, and kept by age and fairness: past `max_size` the file is
//!   rotated into `.ferry-ledger.1.jsonl`, rebuilt from the one before and
//!   this one by [`super::keep`]: lines older than `ledger.keep` go, then,
//!   if it is still over `max_size`, the oldest lines of the addresses with
//!   the most, so at most twice `max_size` is kept and no flood pushes out
//!   an address's few lines.
//! - The newest [`KEEP`] entries are also held in memory for the page, read
//!   back from the file's end at start.
//! - An audit log, not a flood: a deduplicated retry (nothing new stored)
//!   is written once per address and name per [`REPEAT_WINDOW`]
//!   ([`Repeats`]), so forged or looping retries cannot push an honest
//!   line out through rotation (issue 23).

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The ledger's file name in the storage root (a reserved `.ferry` name no
/// upload can take).
pub const LEDGER_FILE: &str = ".ferry-ledger.jsonl";
/// The rotated ledger.
pub const LEDGER_OLD: &str = ".ferry-ledger.1.jsonl";
/// The rotated ledger being rebuilt (renamed over [`LEDGER_OLD`] when whole).
const LEDGER_TEMP: &str = ".ferry-ledger.1.jsonl.new";
/// Entries held in memory for the page (about 300 bytes each: ≈ 300 KiB).
pub(crate) const KEEP: usize = 1000;
/// How far back from the end the ledger is read at start for [`KEEP`].
const TAIL_READ: u64 = 1 << 20;

pub(crate) use ferry_proto::ledger::LedgerEntry;

/// How long a deduplicated retry of a name from an address is not written
/// again (1 h, the default upload window); the first line stays the record.
pub(crate) const REPEAT_WINDOW: Duration = Duration::from_secs(3600);

/// (address, stored name) pairs remembered for [`Repeats`], at most (about
/// 100 bytes each: ≈ 6 MiB); past it, old pairs are dropped first, and if
/// all are recent, lines are written again rather than lost.
const REPEATS_TRACKED: usize = 65_536;

/// Which deduplicated lines are news (sans-IO; time is an input).
#[derive(Debug, Default)]
pub(crate) struct Repeats {
    seen: std::collections::HashMap<(std::net::IpAddr, String), tokio::time::Instant>,
}

impl Repeats {
    /// A line for `stored` from `ip` at `now`: whether to write it. A stored
    /// line is always written; a deduplicated one only if the same pair has
    /// no line within [`REPEAT_WINDOW`].
    pub(crate) fn news(
        &self,
        now: tokio::time::Instant,
        ip: std::net::IpAddr,
        stored: &str,
        deduplicated: bool,
    ) -> bool {
        let key = (crate::limits::canonical(ip), stored.to_owned());
        let recent = self
            .seen
            .get(&key)
            .is_some_and(|t| now.saturating_duration_since(*t) < REPEAT_WINDOW);
        !(deduplicated && recent)
    }

    /// A line for `stored` from `ip` was written at `now`.
    pub(crate) fn written(
        &mut self,
        now: tokio::time::Instant,
        ip: std::net::IpAddr,
        stored: &str,
    ) {
        let key = (crate::limits::canonical(ip), stored.to_owned());
        if self.seen.len() >= REPEATS_TRACKED && !self.seen.contains_key(&key) {
            self.seen
                .retain(|_, t| now.saturating_duration_since(*t) < REPEAT_WINDOW);
            if self.seen.len() >= REPEATS_TRACKED {
                return;
            }
        }
        self.seen.insert(key, now);
    }
}

struct Inner {
    file: File,
    size: u64,
    recent: VecDeque<LedgerEntry>,
    repeats: Repeats,
}

/// The open ledger.
pub(crate) struct Ledger {
    dir: PathBuf,
    max_size: u64,
    /// How long a line is kept at least (`ledger.keep`), room allowing.
    keep: Duration,
    inner: Arc<Mutex<Inner>>,
    dirty: Arc<AtomicBool>,
}

impl Ledger {
    /// Opens (or creates) the ledger in `root`, reads back its newest
    /// entries and starts the thread that syncs it.
    pub(crate) fn open(root: &Path, max_size: u64, keep: Duration) -> io::Result<Ledger> {
        let path = root.join(LEDGER_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        let size = file.metadata()?.len();
        let recent = read_tail(&mut file, size)?;
        let dirty = Arc::new(AtomicBool::new(false));
        let inner = Arc::new(Mutex::new(Inner {
            file,
            size,
            recent,
            repeats: Repeats::default(),
        }));
        let (weak, flag) = (Arc::downgrade(&inner), Arc::clone(&dirty));
        std::thread::Builder::new()
            .name("ferry-ledger".into())
            .spawn(move || sync_loop(weak, flag))?;
        Ok(Ledger {
            dir: root.to_owned(),
            max_size,
            keep,
            inner,
            dirty,
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Plain data behind the lock: usable after a panic elsewhere.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends `entry` (one write of one line), rotating first if the file
    /// is full. A failed write is cut back to the last whole line and
    /// returned: the caller must not acknowledge an upload without its line.
    pub(crate) fn append(&self, entry: LedgerEntry) -> io::Result<()> {
        let deduplicated = entry.outcome == super::Outcome::Deduplicated.name();
        let now = tokio::time::Instant::now();
        let news = self
            .inner()
            .repeats
            .news(now, entry.peer.ip(), &entry.stored, deduplicated);
        if !news {
            tracing::debug!(stored = %entry.stored, "ledger: a repeated identical retry, not written again");
            return Ok(());
        }
        let mut line = match serde_json::to_string(&entry) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "ledger: cannot encode an entry");
                return Ok(());
            }
        };
        line.push('\n');
        let mut inner = self.inner();
        if inner.size + line.len() as u64 > self.max_size {
            if let Err(e) = self.rotate(&mut inner) {
                tracing::warn!(error = %e, "ledger: cannot rotate");
            }
        }
        if let Err(e) = inner.file.write_all(line.as_bytes()) {
            // A write cut short (a full disk) leaves part of a line: cut
            // the file back to its last whole line, or the next line would
            // be glued onto it and both lost on reading.
            let cut = inner.size;
            if let Err(e2) = inner.file.set_len(cut) {
                tracing::warn!(error = %e2, "ledger: cannot cut back a partial line");
            }
            tracing::warn!(error = %e, stored = %entry.stored, "ledger: cannot append; the line is not written");
            return Err(e);
        }
        inner.size += line.len() as u64;
        inner.repeats.written(now, entry.peer.ip(), &entry.stored);
        self.dirty.store(true, Ordering::Release);
        if inner.recent.len() >= KEEP {
            inner.recent.pop_front();
        }
        inner.recent.push_back(entry);
        Ok(())
    }

    /// Rebuilds the rotated file from the one before and the full current
    /// one ([`super::keep::compact`]), written aside and renamed over it,
    /// then starts the current one afresh.
    fn rotate(&self, inner: &mut Inner) -> io::Result<()> {
        inner.file.sync_data()?;
        let mut lines = Vec::new();
        for name in [LEDGER_OLD, LEDGER_FILE] {
            let text = match std::fs::read_to_string(self.dir.join(name)) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            // Whole lines only (a crash may have cut the last one).
            lines.extend(
                text.split_inclusive('\n')
                    .filter(|l| l.ends_with('\n'))
                    .map(|l| super::keep::Line::parse(l.to_owned())),
            );
        }
        let before = lines.len();
        let kept = super::keep::compact(lines, SystemTime::now(), self.keep, self.max_size);
        if kept.len() < before {
            tracing::info!(
                dropped = before - kept.len(),
                kept = kept.len(),
                "ledger: rotated; lines past ledger.keep, or of the addresses with the most, dropped"
            );
        }
        let temp = self.dir.join(LEDGER_TEMP);
        {
            let mut out = File::create(&temp)?;
            for l in &kept {
                out.write_all(l.text.as_bytes())?;
            }
            out.sync_all()?;
        }
        std::fs::rename(&temp, self.dir.join(LEDGER_OLD))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(self.dir.join(LEDGER_FILE))?;
        file.set_len(0)?;
        inner.file = file;
        inner.size = 0;
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// The newest entries that pass `keep`, newest first, at most `limit`.
    pub(crate) fn recent(
        &self,
        keep: impl Fn(&LedgerEntry) -> bool,
        limit: usize,
    ) -> Vec<LedgerEntry> {
        self.inner()
            .recent
            .iter()
            .rev()
            .filter(|e| keep(e))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Syncs what was appended (at a clean stop).
    pub(crate) fn sync(&self) {
        let _ = self.inner().file.sync_data();
    }
}

/// Every second, syncs the ledger if something was appended (off the
/// lock: the handle is cloned under it); ends with the ledger.
fn sync_loop(inner: std::sync::Weak<Mutex<Inner>>, dirty: Arc<AtomicBool>) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if dirty.swap(false, Ordering::AcqRel) {
            let file = inner
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .file
                .try_clone();
            drop(inner);
            if let Ok(f) = file {
                let _ = f.sync_data();
            }
        }
    }
}

/// The last [`KEEP`] whole entries of the file, oldest first (a cut or
/// malformed line is skipped).
fn read_tail(file: &mut File, size: u64) -> io::Result<VecDeque<LedgerEntry>> {
    let start = size.saturating_sub(TAIL_READ);
    file.seek(SeekFrom::Start(start))?;
    let mut text = Vec::new();
    file.take(TAIL_READ).read_to_end(&mut text)?;
    let mut lines: &[u8] = &text;
    if start > 0 {
        // Starting mid-line: drop the partial first line.
        let cut = lines
            .iter()
            .position(|&b| b == b'\n')
            .map_or(lines.len(), |i| i + 1);
        lines = &lines[cut..];
    }
    let mut out = VecDeque::new();
    for line in lines.split(|&b| b == b'\n') {
        if let Ok(entry) = serde_json::from_slice::<LedgerEntry>(line) {
            if out.len() >= KEEP {
                out.pop_front();
            }
            out.push_back(entry);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_KEEP: Duration = Duration::from_secs(180 * 86_400);

    fn entry(n: u64) -> LedgerEntry {
        LedgerEntry {
            time: "2026-12-02T18:00:00Z".into(),
            peer: "127.0.0.1:5000".parse().unwrap(),
            service: ferry_config::ServiceId::Signal.name().into(),
            requested: format!("f{n}.txt"),
            stored: format!("f{n}.txt"),
            size: n,
            crc: "0000000A".into(),
            outcome: "stored".into(),
            unverified_source: false,
        }
    }

    #[test]
    fn entries_survive_a_reopen_and_a_cut_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        {
            let l = Ledger::open(dir.path(), 1 << 20, TEST_KEEP).unwrap();
            l.append(entry(1)).unwrap();
            l.append(entry(2)).unwrap();
        }
        // A crash mid-line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(LEDGER_FILE))
            .unwrap();
        f.write_all(b"{\"time\":\"2026").unwrap();
        let l = Ledger::open(dir.path(), 1 << 20, TEST_KEEP).unwrap();
        let got = l.recent(|_| true, 10);
        assert_eq!(got, vec![entry(2), entry(1)]);
        assert_eq!(l.recent(|e| e.size == 1, 10), vec![entry(1)]);
    }

    #[test]
    fn a_full_ledger_rotates_and_keeps_two_files_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path(), 4096, TEST_KEEP).unwrap();
        for n in 0..100 {
            l.append(entry(n)).unwrap();
        }
        let now = std::fs::metadata(dir.path().join(LEDGER_FILE))
            .unwrap()
            .len();
        let old = std::fs::metadata(dir.path().join(LEDGER_OLD))
            .unwrap()
            .len();
        assert!(now <= 4096 && old <= 4096, "{now} {old}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        assert_eq!(l.recent(|_| true, 1), vec![entry(99)]);
    }

    #[test]
    fn a_deduplicated_retry_is_written_once_per_address_and_name_per_window() {
        let t0 = tokio::time::Instant::now();
        let a: std::net::IpAddr = [10, 0, 0, 1].into();
        let b: std::net::IpAddr = [10, 0, 0, 2].into();
        let mut r = Repeats::default();
        // Each line that is news is written.
        let line = |r: &mut Repeats, t, ip, name: &str, dedup| {
            let news = r.news(t, ip, name, dedup);
            if news {
                r.written(t, ip, name);
            }
            news
        };
        assert!(line(&mut r, t0, a, "lab1.py", false), "the upload itself");
        assert!(
            !line(&mut r, t0, a, "lab1.py", true),
            "its retry a moment later"
        );
        assert!(
            line(&mut r, t0, b, "lab1.py", true),
            "another address's hand-in"
        );
        assert!(line(&mut r, t0, a, "lab2.py", true));
        assert!(!line(&mut r, t0 + REPEAT_WINDOW / 2, a, "lab1.py", true));
        assert!(
            line(&mut r, t0 + REPEAT_WINDOW, a, "lab1.py", true),
            "a window later"
        );
        assert!(
            line(&mut r, t0 + REPEAT_WINDOW, a, "lab1.py", false),
            "stored anew"
        );
        // A line that could not be written leaves its retry news.
        let r = Repeats::default();
        assert!(r.news(t0, a, "x", false));
        assert!(r.news(t0, a, "x", true), "nothing was written for x");
    }

    #[test]
    fn forged_retries_cannot_flush_an_honest_line() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path(), 4096, TEST_KEEP).unwrap();
        l.append(entry(1)).unwrap();
        let mut retry = entry(2);
        retry.outcome = "deduplicated".into();
        for _ in 0..1800 {
            l.append(retry.clone()).unwrap();
        }
        assert_eq!(l.recent(|_| true, 10), vec![retry, entry(1)]);
        assert!(!dir.path().join(LEDGER_OLD).exists(), "never rotated");
    }

    #[test]
    fn one_address_flooding_the_ledger_never_pushes_out_anothers_line() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path(), 4096, TEST_KEEP).unwrap();
        let mut honest = entry(1);
        honest.peer = "10.0.0.9:5000".parse().unwrap();
        honest.stored = "handed-in.py".into();
        l.append(honest).unwrap();
        for n in 0..1000 {
            l.append(entry(n + 10)).unwrap();
        }
        let text = std::fs::read_to_string(dir.path().join(LEDGER_OLD)).unwrap()
            + &std::fs::read_to_string(dir.path().join(LEDGER_FILE)).unwrap();
        assert!(text.contains("handed-in.py"), "the honest line went");
        assert!(text.contains("f1009.txt"), "the newest line is there");
        assert!(text.len() <= 2 * 4096);
        assert!(text.split_inclusive('\n').all(|l| l.ends_with("}\n")));
    }
}
