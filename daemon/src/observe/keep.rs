//! What the ledger keeps when it rotates (sans-IO; time is an input): the
//! rotated file is rebuilt from the one before and the full current one,
//! - first dropping every line older than `ledger.keep`;
//! - then, while the rest is over `max_size`, the oldest lines of the
//!   addresses with the most bytes of lines, down to a share that fits
//!   (the largest `C` with Σ min(bytes of an address, C) ≤ `max_size`).
//!
//! So an address that sent a few files keeps every line of them for
//! `ledger.keep`, however many lines another address (or a forger in many
//! addresses' names) makes: what goes first is the flood's own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// One ledger line, as compaction sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Line {
    /// The whole line, with its newline.
    pub text: String,
    /// Its sender's address (`None`: unreadable, kept as a group of its own).
    pub peer: Option<IpAddr>,
    /// When it was written (`None`: unreadable, never taken as expired).
    pub time: Option<SystemTime>,
}

impl Line {
    /// Reads the fields compaction needs from a ledger line.
    pub(crate) fn parse(text: String) -> Line {
        #[derive(serde::Deserialize)]
        struct Head {
            time: String,
            peer: std::net::SocketAddr,
        }
        let head = serde_json::from_str::<Head>(text.trim_end()).ok();
        Line {
            peer: head.as_ref().map(|h| h.peer.ip()),
            time: head.and_then(|h| humantime::parse_rfc3339(&h.time).ok()),
            text,
        }
    }
}

/// The lines to keep, oldest first, in their order.
pub(crate) fn compact(
    lines: Vec<Line>,
    now: SystemTime,
    keep: Duration,
    max_size: u64,
) -> Vec<Line> {
    let oldest = now.checked_sub(keep);
    let mut lines: Vec<Line> = lines
        .into_iter()
        .filter(|l| match (l.time, oldest) {
            (Some(t), Some(oldest)) => t >= oldest,
            _ => true,
        })
        .collect();
    let total: u64 = lines.iter().map(|l| l.text.len() as u64).sum();
    if total <= max_size {
        return lines;
    }
    let mut bytes: HashMap<Option<IpAddr>, u64> = HashMap::new();
    for l in &lines {
        *bytes.entry(l.peer).or_default() += l.text.len() as u64;
    }
    let share = fair_share(bytes.values().copied().collect(), max_size);
    // Newest first: each address keeps its newest lines within its share.
    let mut used: HashMap<Option<IpAddr>, u64> = HashMap::new();
    let mut keep_line = vec![false; lines.len()];
    for (i, l) in lines.iter().enumerate().rev() {
        let u = used.entry(l.peer).or_default();
        if *u + l.text.len() as u64 <= share {
            *u += l.text.len() as u64;
            keep_line[i] = true;
        }
    }
    let mut i = 0;
    lines.retain(|_| {
        i += 1;
        keep_line[i - 1]
    });
    lines
}

/// The largest per-address share `C` with Σ min(bytes, C) ≤ `max`.
fn fair_share(mut bytes: Vec<u64>, max: u64) -> u64 {
    bytes.sort_unstable();
    let mut left = max;
    let mut n = bytes.len() as u64;
    for b in bytes {
        // Every address from here on has at least `b`: can each have `b`?
        if b.saturating_mul(n) <= left {
            left -= b;
            n -= 1;
        } else {
            return left / n;
        }
    }
    u64::MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn line(peer: u8, t: SystemTime, n: usize) -> Line {
        Line {
            text: format!("{peer}:{n:0>97}\n"), // 100 bytes
            peer: Some(IpAddr::from([10, 0, 0, peer])),
            time: Some(t),
        }
    }

    #[test]
    fn a_flood_loses_its_own_lines_first_and_the_honest_keep_theirs() {
        let now = SystemTime::UNIX_EPOCH + 400 * DAY;
        let honest: Vec<Line> = (0..3).map(|n| line(1, now - 10 * DAY, n)).collect();
        let mut all = honest.clone();
        all.extend((0..10_000).map(|n| line(2, now - DAY, n)));
        all.push(line(3, now, 0));
        let kept = compact(all, now, 180 * DAY, 100_000);
        let size: usize = kept.iter().map(|l| l.text.len()).sum();
        assert!(size <= 100_000, "{size}");
        for h in &honest {
            assert!(kept.contains(h), "an honest line went");
        }
        assert!(kept.contains(&line(3, now, 0)));
        // The flood keeps its newest lines, in order.
        let flood: Vec<&Line> = kept
            .iter()
            .filter(|l| l.peer == Some([10, 0, 0, 2].into()))
            .collect();
        assert_eq!(flood.len(), 996);
        assert_eq!(flood.last().unwrap().text, line(2, now, 9_999).text);
    }

    #[test]
    fn expired_lines_go_first_and_unreadable_ones_stay() {
        let now = SystemTime::UNIX_EPOCH + 400 * DAY;
        let old = line(1, now - 200 * DAY, 0);
        let new = line(1, now - 100 * DAY, 1);
        let junk = Line::parse("{\"time\":\"2026".into());
        assert_eq!((junk.peer, junk.time), (None, None));
        let kept = compact(
            vec![old, new.clone(), junk.clone()],
            now,
            180 * DAY,
            1 << 20,
        );
        assert_eq!(kept, vec![new, junk]);
    }

    #[test]
    fn a_real_line_parses() {
        let l = Line::parse(
            r#"{"time":"2026-12-03T08:00:00Z","peer":"127.0.0.1:40210","service":"signal","requested":"a","stored":"a","size":1,"crc":"00000000","outcome":"stored"}"#
                .to_owned() + "\n",
        );
        assert_eq!(l.peer, Some(IpAddr::from([127, 0, 0, 1])));
        assert_eq!(
            l.time,
            humantime::parse_rfc3339("2026-12-03T08:00:00Z").ok()
        );
    }

    #[test]
    fn the_share_fills_the_room() {
        assert_eq!(fair_share(vec![100, 100], 1000), u64::MAX);
        assert_eq!(fair_share(vec![100, 10_000], 1000), 900);
        assert_eq!(fair_share(vec![600, 10_000, 10_000], 1000), 333);
    }
}
