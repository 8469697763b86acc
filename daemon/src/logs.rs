//! The text log's writer: every control character a client could smuggle
//! into a field (a newline forging a second event, an ANSI escape repainting
//! the terminal) is written escaped, so one event is always one line.
//!
//! The formatter hands the writer one whole event per write, ending in the
//! one newline that is its own; every other control character becomes
//! `\n`, `\r`, `\t` or `\xNN` (`\u{NNNN}` for C1 controls and the Unicode
//! line and paragraph separators).

use std::io::{self, Write};

/// `MakeWriter` for stderr, escaping as above.
#[derive(Debug, Clone, Copy, Default)]
pub struct EscapedStderr;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for EscapedStderr {
    type Writer = Escaping<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping(io::stderr())
    }
}

/// A writer that escapes control characters before passing bytes on.
#[derive(Debug)]
pub struct Escaping<W>(pub W);

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(escape(buf).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// One event's text with every control character but a final newline escaped.
pub fn escape(buf: &[u8]) -> String {
    let text = String::from_utf8_lossy(buf);
    let (body, end) = match text.strip_suffix('\n') {
        Some(b) => (b, "\n"),
        None => (&text[..], ""),
    };
    let mut out = String::with_capacity(body.len() + 1);
    for c in body.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{{{:04x}}}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push_str(end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_stays_one_line() {
        assert_eq!(escape(b"plain event\n"), "plain event\n");
        assert_eq!(
            escape(b"requested=a\nINFO transfer finished stored=x\n"),
            "requested=a\\nINFO transfer finished stored=x\n"
        );
        assert_eq!(
            escape(b"\x1b[31mred\x07\r\t\x7f\n"),
            "\\x1b[31mred\\x07\\r\\t\\x7f\n"
        );
        assert_eq!(
            escape("a\u{85}b\u{2028}c".as_bytes()),
            "a\\u{0085}b\\u{2028}c"
        );
        assert_eq!(escape(b"caf\xc3\xa9 \xff\n"), "caf\u{e9} \u{fffd}\n");
    }
}
