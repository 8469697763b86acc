//! The lab page and the protocol book as HTML: plain server-rendered
//! markup with inline style, no script and no outside asset (a lab box may
//! have no Internet). Every client string is escaped.

use std::fmt::Write;

use crate::observe::{Attempt, LedgerEntry, Live, Outcome, Viewer};

/// What the page shows.
pub(super) struct Data {
    pub(super) viewer: Viewer,
    pub(super) live: Vec<Live>,
    pub(super) attempts: Vec<Attempt>,
    pub(super) ledger: Vec<LedgerEntry>,
    /// The services served, with their ports.
    pub(super) ports: Vec<(String, u16)>,
}

const STYLE: &str = "body{font:15px/1.45 system-ui,sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;color:#222}\
h1{font-size:1.5em;margin:0}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:.25em .5em;border-bottom:1px solid #eee;vertical-align:top}\
.failed{color:#a00;font-weight:600}.ok{color:#070}code,pre{font:13px ui-monospace,monospace}\
.diag{background:#fff6f0;border-left:4px solid #d60;padding:.5em .8em;margin:.3em 0 .8em}\
.diag pre{white-space:pre-wrap;word-break:break-all;margin:.2em 0}.muted{color:#666}";

/// The page at `/`.
pub(super) fn render(d: &Data) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let who = if d.viewer.admin {
        "every client (your address is in http.admin)".to_owned()
    } else {
        format!("the clients at your address, {}", d.viewer.ip)
    };
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta http-equiv=refresh content=5>\
         <meta name=viewport content=\"width=device-width\"><title>ferryd: transfers</title><style>{STYLE}</style></head><body>\
         <h1>ferryd</h1><p class=muted>Showing {}. This page refreshes every 5 seconds. Ports: {}. \
         <a href=\"/book\">The protocol book</a> · <a href=\"/api/attempts\">JSON</a> · <a href=\"/metrics\">metrics</a></p>",
        esc(&who),
        d.ports
            .iter()
            .map(|(s, p)| format!("{} {p}", esc(s)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    live(&mut out, &d.live);
    attempts(&mut out, &d.attempts);
    ledger(&mut out, &d.ledger);
    out.push_str("</body></html>\n");
    out
}

fn live(out: &mut String, live: &[Live]) {
    let _ = write!(out, "<h2>In flight ({})</h2>", live.len());
    if live.is_empty() {
        out.push_str("<p class=muted>No transfer in progress.</p>");
        return;
    }
    out.push_str("<table><tr><th>started</th><th>service</th><th>client</th><th>direction</th><th>seconds</th></tr>");
    for l in live {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td><td>{:.1}</td></tr>",
            esc(&l.time),
            l.service,
            l.peer,
            l.direction,
            l.seconds
        );
    }
    out.push_str("</table>");
}

fn attempts(out: &mut String, attempts: &[Attempt]) {
    let _ = write!(
        out,
        "<h2>Recent attempts ({}), newest first</h2>",
        attempts.len()
    );
    if attempts.is_empty() {
        out.push_str("<p class=muted>None yet from here.</p>");
        return;
    }
    out.push_str("<table><tr><th>time</th><th>service</th><th>client</th><th>name</th><th>bytes</th><th>outcome</th></tr>");
    for a in attempts {
        let class = if a.outcome == Outcome::Failed {
            "failed"
        } else {
            "ok"
        };
        let name = match &a.stored {
            Some(s) if *s != a.requested => format!("{} → {}", esc(&a.requested), esc(s)),
            _ => esc(&a.requested),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}{}</td><td><code>{name}</code></td><td>{}</td><td class={class}>{}</td></tr>",
            esc(&a.time),
            a.service,
            a.peer,
            unverified(a.unverified_source),
            a.bytes,
            a.outcome
        );
        if let Some(d) = &a.diagnosis {
            let _ = write!(
                out,
                "<tr><td colspan=6><div class=diag><b>Why:</b> {}<br><b>What the client sent first:</b>\
                 <pre>{}</pre><pre>{}</pre><b>What {} expected here:</b> {}<br><b>The rule:</b> {}<br>\
                 <a href=\"/book#{}\">The protocol book: {}</a></div></td></tr>",
                rich(a.reason.as_deref().unwrap_or_default()),
                if d.sent_hex.is_empty() { "(nothing)".to_owned() } else { esc(&d.sent_hex) },
                esc(&d.sent_text),
                a.service,
                rich(&d.expected),
                rich(&d.rule),
                slug(d.section),
                esc(d.section)
            );
        }
    }
    out.push_str("</table>");
}

/// The mark beside a client address the protocol cannot prove (UDP).
fn unverified(unverified: bool) -> &'static str {
    match unverified {
        true => " <span class=muted title=\"UDP: a datagram's source address is whatever its sender wrote; anyone can send in this address's name\">(UDP: unverified)</span>",
        false => "",
    }
}

fn ledger(out: &mut String, ledger: &[LedgerEntry]) {
    let _ = write!(
        out,
        "<h2>Stored files, newest first ({})</h2>",
        ledger.len()
    );
    if ledger.is_empty() {
        out.push_str("<p class=muted>Nothing stored yet from here.</p>");
        return;
    }
    out.push_str("<table><tr><th>time</th><th>client</th><th>service</th><th>sent as</th><th>stored as</th><th>size</th><th>CRC-32</th></tr>");
    for e in ledger {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}{}</td><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td></tr>",
            esc(&e.time),
            e.peer,
            unverified(e.unverified_source),
            esc(&e.service),
            esc(&e.requested),
            esc(&e.stored),
            e.size,
            esc(&e.crc)
        );
    }
    out.push_str("</table>");
}

/// The protocol book (docs/PROTOCOLS.md) as HTML: headings with the ids the
/// diagnoses link to, the rest as preformatted text.
pub(super) fn book() -> String {
    const BOOK: &str = include_str!("../../../docs/PROTOCOLS.md");
    let mut out = String::with_capacity(BOOK.len() * 2);
    let _ = write!(
        out,
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>ferry: the protocol book</title><style>{STYLE} pre{{white-space:pre-wrap}}</style></head><body><p><a href=\"/\">Back to the transfers</a></p>"
    );
    let mut in_pre = false;
    for line in BOOK.lines() {
        let level = line.bytes().take_while(|&b| b == b'#').count();
        if (1..=4).contains(&level) && line.as_bytes().get(level) == Some(&b' ') && !in_code(line) {
            if in_pre {
                out.push_str("</pre>");
                in_pre = false;
            }
            let title = &line[level + 1..];
            let _ = write!(
                out,
                "<h{level} id=\"{}\">{}</h{level}>",
                slug(title),
                esc(title)
            );
        } else {
            if !in_pre {
                out.push_str("<pre>");
                in_pre = true;
            }
            out.push_str(&esc(line));
            out.push('\n');
        }
    }
    if in_pre {
        out.push_str("</pre>");
    }
    out.push_str("</body></html>\n");
    out
}

fn in_code(line: &str) -> bool {
    line.starts_with("    ")
}

/// A heading's anchor as GitHub makes it: lower case, spaces to `-`,
/// punctuation other than `-` and `_` dropped.
pub(super) fn slug(title: &str) -> String {
    title
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// [`esc`], with `backquoted` spans (as the diagnoses write code) set as code.
pub(super) fn rich(s: &str) -> String {
    let escaped = esc(s);
    if escaped.matches('`').count() % 2 != 0 {
        return escaped;
    }
    let mut out = String::with_capacity(escaped.len() + 16);
    for (i, part) in escaped.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str("<code>");
            out.push_str(part);
            out.push_str("</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// Text safe inside HTML elements and quoted attributes.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_cannot_become_markup() {
        assert_eq!(
            esc("<script>alert('x')</script>&\"\u{7}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;\u{fffd}"
        );
    }

    #[test]
    fn backquoted_spans_are_code_and_an_odd_backquote_is_text() {
        assert_eq!(
            rich("wait for `go ahead` <now>"),
            "wait for <code>go ahead</code> &lt;now&gt;"
        );
        assert_eq!(rich("a ` b"), "a ` b");
    }

    #[test]
    fn anchors_match_the_books_headings() {
        assert_eq!(slug("tcp_upload (9003/tcp)"), "tcp_upload-9003tcp");
        assert_eq!(slug("The handout's dialect"), "the-handouts-dialect");
        let book = book();
        for section in [
            "tcp_upload (9003/tcp)",
            "magic_download (9004/tcp)",
            "signal (9005/tcp)",
            "The handout's dialect",
            "udp_upload (9000/udp)",
            "udp_download (9001/udp)",
            "Summary",
        ] {
            assert!(
                book.contains(&format!("id=\"{}\"", slug(section))),
                "{section} has no anchor in the book"
            );
        }
    }
}
