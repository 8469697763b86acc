//! A check's report as text lines, JSON and JUnit XML.

use ferry_proto::show::{hex, printable};

use super::{Checked, Report, Verdict};

impl Checked {
    /// `pass`, `FAIL`, `advice` (an advice rule not met) or `skip`.
    pub fn word(&self) -> &'static str {
        match (&self.verdict, self.rule.advice) {
            (Verdict::Pass, _) => "pass",
            (Verdict::Fail(_), false) => "FAIL",
            (Verdict::Fail(_), true) => "advice",
            (Verdict::Skipped(_), _) => "skip",
        }
    }

    /// The result as lines for a terminal: the rule, then what was
    /// expected and what arrived when it was not met.
    pub fn lines(&self) -> Vec<String> {
        let r = self.rule;
        let mut out = vec![format!(
            "{:<6} {}  {} [{}]",
            self.word(),
            r.id,
            r.says,
            r.section
        )];
        match &self.verdict {
            Verdict::Pass => {}
            Verdict::Skipped(why) => out.push(format!("       skipped: {why}")),
            Verdict::Fail(e) => {
                out.push(format!("       expected: {}", e.expected));
                if e.got.is_empty() {
                    out.push("       got: nothing".into());
                } else {
                    out.push(format!(
                        "       got: {}  \"{}\"",
                        hex(&e.got),
                        printable(&e.got)
                    ));
                }
                if !e.note.is_empty() {
                    out.push(format!("       {}", e.note));
                }
            }
        }
        out
    }
}

impl Report {
    /// The summary line.
    pub fn summary(&self) -> String {
        let count = |w: &str| self.results.iter().filter(|c| c.word() == w).count();
        format!(
            "{} rules: {} passed, {} failed, {} advice not followed, {} skipped",
            self.results.len(),
            count("pass"),
            count("FAIL"),
            count("advice"),
            count("skip")
        )
    }
}

/// The report as JSON: every rule's id, verdict and evidence.
pub fn to_json(report: &Report) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = report
        .results
        .iter()
        .map(|c| {
            let mut v = serde_json::json!({
                "id": c.rule.id,
                "says": c.rule.says,
                "section": c.rule.section,
                "advice": c.rule.advice,
                "verdict": c.word().to_lowercase(),
            });
            match &c.verdict {
                Verdict::Fail(e) => {
                    v["expected"] = e.expected.clone().into();
                    v["got_hex"] = hex(&e.got).into();
                    v["got_text"] = printable(&e.got).into();
                    v["note"] = e.note.clone().into();
                }
                Verdict::Skipped(why) => v["note"] = why.clone().into(),
                Verdict::Pass => {}
            }
            v
        })
        .collect();
    serde_json::json!({
        "ok": report.passed(),
        "command": "check",
        "protocol": report.protocol.name(),
        "server": report.server,
        "rules": rules,
    })
}

/// XML text: `&`, `<`, `>`, `"` and `'` as entities, control characters
/// (which XML 1.0 cannot hold) as `\u{…}`.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() && c != '\n' => out.extend(c.escape_default()),
            c => out.push(c),
        }
    }
    out
}

/// The report as a JUnit XML test suite (one test case per rule; an
/// advice rule not met is a passing case with its evidence as output).
pub fn junit(report: &Report) -> String {
    let suite = format!("ferry check {}", report.protocol.name());
    let failures = report.results.iter().filter(|c| c.fails()).count();
    let skipped = report
        .results
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Skipped(_)))
        .count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">\n",
        xml(&suite),
        report.results.len()
    );
    for c in &report.results {
        out.push_str(&format!(
            "  <testcase classname=\"{}\" name=\"{}\">\n",
            xml(report.protocol.name()),
            xml(c.rule.id)
        ));
        let detail = xml(&c.lines().join("\n"));
        match (&c.verdict, c.fails()) {
            (Verdict::Fail(e), true) => out.push_str(&format!(
                "    <failure message=\"{}\">{detail}</failure>\n",
                xml(&e.note)
            )),
            (Verdict::Fail(_), false) => {
                out.push_str(&format!("    <system-out>{detail}</system-out>\n"))
            }
            (Verdict::Skipped(why), _) => {
                out.push_str(&format!("    <skipped message=\"{}\"/>\n", xml(why)))
            }
            (Verdict::Pass, _) => {}
        }
        out.push_str("  </testcase>\n");
    }
    out.push_str("</testsuite>\n");
    out
}
