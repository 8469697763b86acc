//! The lab page and the protocol book as HTML: plain server-rendered
//! markup with inline style, no script and no outside asset (a lab box may
//! have no Internet). The markup is `maud`'s: every string placed in it is
//! escaped unless it is wrapped as markup on purpose ([`Rich`]), so client
//! text cannot become markup by a forgotten call.

use maud::{html, Markup, PreEscaped, Render, DOCTYPE};

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
    let who = if d.viewer.admin {
        "every client (your address is in http.admin)".to_owned()
    } else {
        format!("the clients at your address, {}", d.viewer.ip)
    };
    let ports = d
        .ports
        .iter()
        .map(|(s, p)| format!("{s} {p}"))
        .collect::<Vec<_>>()
        .join(", ");
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content="5";
                meta name="viewport" content="width=device-width";
                title { "ferryd: transfers" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                h1 { "ferryd" }
                p.muted {
                    "Showing " (Clean(&who)) ". This page refreshes every 5 seconds. Ports: " (Clean(&ports)) ". "
                    a href="/book" { "The protocol book" } " · "
                    a href="/api/attempts" { "JSON" } " · "
                    a href="/metrics" { "metrics" }
                }
                (live(&d.live))
                (attempts(&d.attempts))
                (ledger(&d.ledger))
            }
        }
    };
    page.into_string() + "\n"
}

fn live(live: &[Live]) -> Markup {
    html! {
        h2 { "In flight (" (live.len()) ")" }
        @if live.is_empty() {
            p.muted { "No transfer in progress." }
        } @else {
            table {
                tr { th { "started" } th { "service" } th { "client" } th { "direction" } th { "seconds" } }
                @for l in live {
                    tr {
                        td { (Clean(&l.time)) }
                        td { (l.service) }
                        td { (l.peer) }
                        td { (format!("{:?}", l.direction)) }
                        td { (format!("{:.1}", l.seconds)) }
                    }
                }
            }
        }
    }
}

fn attempts(attempts: &[Attempt]) -> Markup {
    html! {
        h2 { "Recent attempts (" (attempts.len()) "), newest first" }
        @if attempts.is_empty() {
            p.muted { "None yet from here." }
        } @else {
            table {
                tr { th { "time" } th { "service" } th { "client" } th { "name" } th { "bytes" } th { "outcome" } }
                @for a in attempts {
                    (attempt(a))
                }
            }
        }
    }
}

/// One attempt's row, and its diagnosis below it if it has one.
fn attempt(a: &Attempt) -> Markup {
    let class = if a.outcome == Outcome::Failed {
        "failed"
    } else {
        "ok"
    };
    html! {
        tr {
            td { (Clean(&a.time)) }
            td { (a.service) }
            td { (a.peer) (unverified(a.unverified_source)) }
            td {
                code {
                    (Clean(&a.requested))
                    @if let Some(s) = a.stored.as_ref().filter(|s| **s != a.requested) {
                        " → " (Clean(s))
                    }
                }
            }
            td { (a.bytes) }
            td class=(class) { (a.outcome) }
        }
        @if let Some(d) = &a.diagnosis {
            tr {
                td colspan="6" {
                    div.diag {
                        b { "Why:" } " " (Rich(a.reason.as_deref().unwrap_or_default())) br;
                        b { "What the client sent first:" }
                        pre { @if d.sent_hex.is_empty() { "(nothing)" } @else { (Clean(&d.sent_hex)) } }
                        pre { (Clean(&d.sent_text)) }
                        b { "What " (a.service) " expected here:" } " " (Rich(&d.expected)) br;
                        b { "The rule:" } " " (Rich(&d.rule)) br;
                        a href=(format!("/book#{}", slug(d.section))) { "The protocol book: " (d.section) }
                    }
                }
            }
        }
    }
}

/// The mark beside a client address the protocol cannot prove (UDP).
fn unverified(unverified: bool) -> Markup {
    html! {
        @if unverified {
            " "
            span.muted title="UDP: a datagram's source address is whatever its sender wrote; anyone can send in this address's name" {
                "(UDP: unverified)"
            }
        }
    }
}

fn ledger(ledger: &[LedgerEntry]) -> Markup {
    html! {
        h2 { "Stored files, newest first (" (ledger.len()) ")" }
        @if ledger.is_empty() {
            p.muted { "Nothing stored yet from here." }
        } @else {
            table {
                tr { th { "time" } th { "client" } th { "service" } th { "sent as" } th { "stored as" } th { "size" } th { "CRC-32" } }
                @for e in ledger {
                    tr {
                        td { (Clean(&e.time)) }
                        td { (e.peer) (unverified(e.unverified_source)) }
                        td { (Clean(&e.service)) }
                        td { code { (Clean(&e.requested)) } }
                        td { code { (Clean(&e.stored)) } }
                        td { (e.size) }
                        td { code { (Clean(&e.crc)) } }
                    }
                }
            }
        }
    }
}

/// The protocol book (docs/PROTOCOLS.md) as HTML: headings with the ids the
/// diagnoses link to, the rest as preformatted text.
pub(super) fn book() -> String {
    const BOOK: &str = include_str!("../../../docs/PROTOCOLS.md");
    let page = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "ferry: the protocol book" }
                style { (PreEscaped(STYLE)) " pre{white-space:pre-wrap}" }
            }
            body {
                p { a href="/" { "Back to the transfers" } }
                @for block in blocks(BOOK) {
                    @match block {
                        Block::Heading(level, title) => (heading(level, title)),
                        Block::Text(lines) => pre { @for line in lines { (Clean(line)) "\n" } },
                    }
                }
            }
        }
    };
    page.into_string() + "\n"
}

/// A part of the book: a heading, or the lines between two.
enum Block<'a> {
    Heading(usize, &'a str),
    Text(Vec<&'a str>),
}

/// The book cut at its headings (`#` to `####`, not in indented code).
fn blocks(book: &str) -> Vec<Block<'_>> {
    let mut out = Vec::new();
    let mut text: Vec<&str> = Vec::new();
    for line in book.lines() {
        let level = line.bytes().take_while(|&b| b == b'#').count();
        if (1..=4).contains(&level) && line.as_bytes().get(level) == Some(&b' ') && !in_code(line) {
            if !text.is_empty() {
                out.push(Block::Text(std::mem::take(&mut text)));
            }
            out.push(Block::Heading(level, &line[level + 1..]));
        } else {
            text.push(line);
        }
    }
    if !text.is_empty() {
        out.push(Block::Text(text));
    }
    out
}

fn heading(level: usize, title: &str) -> Markup {
    let id = slug(title);
    match level {
        1 => html! { h1 id=(id) { (title) } },
        2 => html! { h2 id=(id) { (title) } },
        3 => html! { h3 id=(id) { (title) } },
        _ => html! { h4 id=(id) { (title) } },
    }
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

/// Client text, escaped as all text is, with control characters (which
/// HTML cannot show, and which a hostile name carries to confuse a reader)
/// written as escapes: a name sent with its newline shows `name.txt\n`.
struct Clean<'a>(&'a str);

impl Render for Clean<'_> {
    fn render_to(&self, buffer: &mut String) {
        let mut shown = String::with_capacity(self.0.len());
        for c in self.0.chars() {
            if c.is_control() {
                shown.extend(c.escape_default());
            } else {
                shown.push(c);
            }
        }
        shown.render_to(buffer);
    }
}

/// A diagnosis's text: [`Clean`], with `backquoted` spans (as the diagnoses
/// write code) set as code; an odd backquote is text.
struct Rich<'a>(&'a str);

impl Render for Rich<'_> {
    fn render_to(&self, buffer: &mut String) {
        let text = self.0;
        let markup = if text.matches('`').count() % 2 != 0 {
            html! { (Clean(text)) }
        } else {
            html! {
                @for (i, part) in text.split('`').enumerate() {
                    @if i % 2 == 1 { code { (Clean(part)) } } @else { (Clean(part)) }
                }
            }
        };
        markup.render_to(buffer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(r: impl Render) -> String {
        r.render().into_string()
    }

    #[test]
    fn client_text_cannot_become_markup() {
        assert_eq!(
            shown(Clean("<script>alert('x')</script>&\"\u{7}")),
            "&lt;script&gt;alert('x')&lt;/script&gt;&amp;&quot;\\u{7}"
        );
        assert_eq!(shown(Clean("newline.txt\n")), "newline.txt\\n");
    }

    #[test]
    fn backquoted_spans_are_code_and_an_odd_backquote_is_text() {
        assert_eq!(
            shown(Rich("wait for `go ahead` <now>")),
            "wait for <code>go ahead</code> &lt;now&gt;"
        );
        assert_eq!(shown(Rich("a ` b")), "a ` b");
        assert_eq!(
            shown(Rich("`<b>`")),
            "<code>&lt;b&gt;</code>",
            "a code span's text is escaped too"
        );
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
