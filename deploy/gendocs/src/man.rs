//! The man pages: clap_mangen's sections, then the binary's own (from
//! `prose`), then SEE ALSO.
//!
//! Every page name a page mentions is one generated here or named by
//! `prose` as the other binary's page: clap's automatic `help` subcommand
//! gets no page, so it is left out of SUBCOMMANDS too.

use std::io;

use clap::Command;
use clap_mangen::Man;

use crate::prose::{self, Block, Section};

/// Every page of `cmd`: the command's own first, then one per visible
/// subcommand, as (page name, roff).
pub(crate) fn pages(cmd: &Command, section: &str) -> io::Result<Vec<(String, Vec<u8>)>> {
    let name = cmd.get_name().to_owned();
    let mut root = cmd.clone().disable_help_subcommand(true);
    root.build();
    let subs: Vec<(String, Command)> = root
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| {
            let page = format!("{name}-{}", s.get_name());
            (page.clone(), s.clone().name(page))
        })
        .collect();
    let own = prose::of(&name);
    let mut see_also: Vec<String> = subs
        .iter()
        .map(|(page, _)| format!("{page}({section})"))
        .collect();
    see_also.extend(own.companions.iter().map(|c| (*c).to_owned()));
    let mut out = vec![(
        name.clone(),
        render(root, section, own.sections, &see_also)?,
    )];
    let parent = [format!("{name}({section})")];
    for (page, sub) in subs {
        out.push((page, render(sub, section, &[], &parent)?));
    }
    Ok(out)
}

/// One page: clap_mangen's sections in its order, `extra` after the
/// subcommands, SEE ALSO last.
fn render(
    cmd: Command,
    section: &str,
    extra: &[Section],
    see_also: &[String],
) -> io::Result<Vec<u8>> {
    let has_subcommands = cmd.get_subcommands().any(|s| !s.is_hide_set());
    let has_after_help = cmd.get_after_help().is_some() || cmd.get_after_long_help().is_some();
    let has_version = cmd.get_version().is_some();
    let man = Man::new(cmd).section(section);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    if has_subcommands {
        man.render_subcommands_section(&mut out)?;
    }
    for s in extra {
        out.extend_from_slice(roff_section(s).as_bytes());
    }
    if has_after_help {
        man.render_extra_section(&mut out)?;
    }
    if has_version {
        man.render_version_section(&mut out)?;
    }
    if !see_also.is_empty() {
        out.extend_from_slice(b".SH \"SEE ALSO\"\n");
        out.extend_from_slice(escape(&see_also.join(", ")).as_bytes());
        out.push(b'\n');
    }
    Ok(out)
}

/// One of `prose`'s sections as roff.
fn roff_section(s: &Section) -> String {
    let mut out = format!(".SH \"{}\"\n", s.title);
    for block in s.blocks {
        match block {
            Block::Para(text) => {
                out.push_str(".PP\n");
                out.push_str(&escape(text));
            }
            Block::Item(term, text) => {
                // After `\fB`, a leading `.` cannot start a request.
                out.push_str(".TP\n\\fB");
                out.push_str(&escape_inline(term));
                out.push_str("\\fR\n");
                out.push_str(&escape(text));
            }
        }
        out.push('\n');
    }
    out
}

/// Text as a roff text line: [`escape_inline`], with `\&` first so a
/// leading `.` or `'` is never read as a request.
fn escape(text: &str) -> String {
    format!("\\&{}", escape_inline(text))
}

/// Backslashes and hyphens escaped, quotes made the typewriter quote.
fn escape_inline(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            '\'' => out.push_str("\\(aq"),
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Command {
        Command::new(name.to_owned())
            .version("1.0")
            .about("A sample")
            .arg(clap::Arg::new("config").long("config").global(true))
            .subcommand(Command::new("check").about("Checks"))
            .subcommand(Command::new("secret").hide(true))
    }

    fn text(page: &[u8]) -> String {
        String::from_utf8(page.to_vec()).unwrap()
    }

    #[test]
    fn pages_are_the_command_and_its_visible_subcommands() {
        let pages = pages(&sample("ferryd"), "8").unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ferryd", "ferryd-check"]);
    }

    #[test]
    fn see_also_and_subcommands_name_only_generated_pages() {
        let pages = pages(&sample("ferryd"), "8").unwrap();
        let root = text(&pages[0].1);
        assert!(root.contains("ferryd\\-check(8)"), "{root}");
        assert!(!root.contains("ferryd\\-help"), "{root}");
        assert!(!root.contains("secret"), "{root}");
        let see_also = root.split(".SH \"SEE ALSO\"\n").nth(1).unwrap();
        assert_eq!(see_also, "\\&ferryd\\-check(8), ferry(1)\n");
        let sub = text(&pages[1].1);
        assert!(sub.ends_with(".SH \"SEE ALSO\"\n\\&ferryd(8)\n"), "{sub}");
    }

    #[test]
    fn the_daemon_page_has_its_own_sections_in_order() {
        let root = text(&pages(&sample("ferryd"), "8").unwrap()[0].1);
        let at = |title: &str| {
            root.find(&format!(".SH {title}\n"))
                .or_else(|| root.find(&format!(".SH \"{title}\"\n")))
                .unwrap_or_else(|| panic!("{title} missing in {root}"))
        };
        let order = [
            "SUBCOMMANDS",
            "CONFIGURATION",
            "SIGNALS",
            "EXIT STATUS",
            "FILES",
            "VERSION",
            "SEE ALSO",
        ];
        for pair in order.windows(2) {
            assert!(at(pair[0]) < at(pair[1]), "{} after {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn text_cannot_become_a_request() {
        assert_eq!(escape(".ferry-lock"), "\\&.ferry\\-lock");
        assert_eq!(escape("it's a\\b"), "\\&it\\(aqs a\\eb");
        let s = roff_section(&Section {
            title: "FILES",
            blocks: &[Block::Item(".ferry-lock", "The lock.")],
        });
        assert_eq!(
            s,
            ".SH \"FILES\"\n.TP\n\\fB.ferry\\-lock\\fR\n\\&The lock.\n"
        );
    }
}
