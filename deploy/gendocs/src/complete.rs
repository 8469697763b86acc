//! Shell completions that offer only what `--help` shows.
//!
//! clap_complete (4.6) offers every subcommand, hidden ones included (it
//! skips only hidden possible values), so `ferryd <TAB>` would offer the
//! packaging-only `generate-docs`. The scripts are generated from a copy of
//! the command without its hidden subcommands. clap has no way to remove a
//! subcommand, so the copy is a new command with the original's name,
//! texts, settings, arguments, groups and visible subcommands.

use clap::Command;
use clap_complete::Shell;

/// The completion scripts of `cmd` as (file name, script): `NAME.bash`,
/// `_NAME` (zsh) and `NAME.fish`.
pub(crate) fn scripts(cmd: &Command) -> Vec<(String, Vec<u8>)> {
    let name = cmd.get_name().to_owned();
    let mut visible = without_hidden(cmd);
    [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ]
    .into_iter()
    .map(|(shell, file)| {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut visible, name.clone(), &mut out);
        (file, out)
    })
    .collect()
}

/// `cmd` (not yet built) without its hidden subcommands, at every level.
fn without_hidden(cmd: &Command) -> Command {
    let mut out = Command::new(cmd.get_name().to_owned())
        .args(cmd.get_arguments().cloned())
        .groups(cmd.get_groups().cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(without_hidden),
        )
        .subcommand_required(cmd.is_subcommand_required_set())
        .arg_required_else_help(cmd.is_arg_required_else_help_set())
        .disable_help_subcommand(cmd.is_disable_help_subcommand_set())
        .disable_help_flag(cmd.is_disable_help_flag_set())
        .disable_version_flag(cmd.is_disable_version_flag_set())
        .visible_aliases(cmd.get_visible_aliases().map(str::to_owned))
        .hide(cmd.is_hide_set());
    if let Some(v) = cmd.get_version() {
        out = out.version(v.to_owned());
    }
    if let Some(v) = cmd.get_long_version() {
        out = out.long_version(v.to_owned());
    }
    if let Some(a) = cmd.get_about() {
        out = out.about(a.clone());
    }
    if let Some(a) = cmd.get_long_about() {
        out = out.long_about(a.clone());
    }
    if let Some(h) = cmd.get_subcommand_help_heading() {
        out = out.subcommand_help_heading(h.to_owned());
    }
    if let Some(v) = cmd.get_subcommand_value_name() {
        out = out.subcommand_value_name(v.to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, ArgGroup};

    /// A command shaped like ferry's: global options in a group, a value
    /// enum, a required subcommand, an alias, a nested level.
    fn sample(hidden: bool) -> Command {
        let mut cmd = Command::new("tool")
            .version("1.0")
            .about("A tool")
            .subcommand_required(true)
            .arg(Arg::new("host").long("host").global(true).env("TOOL_HOST"))
            .arg(
                Arg::new("quiet")
                    .short('q')
                    .long("quiet")
                    .action(ArgAction::SetTrue)
                    .global(true),
            )
            .arg(
                Arg::new("format")
                    .long("format")
                    .value_parser(["text", "json"]),
            )
            .group(
                ArgGroup::new("Global")
                    .args(["host", "quiet"])
                    .multiple(true),
            )
            .subcommand(
                Command::new("send")
                    .about("Upload")
                    .visible_alias("put")
                    .arg(Arg::new("file").required(true))
                    .subcommand(Command::new("deep").about("Nested")),
            )
            .subcommand(Command::new("ping").about("Health check"));
        if hidden {
            cmd = cmd.subcommand(
                Command::new("generate-docs")
                    .hide(true)
                    .arg(Arg::new("dir")),
            );
        }
        cmd
    }

    #[test]
    fn a_command_without_hidden_subcommands_completes_the_same() {
        let plain = sample(false);
        for ((file, ours), shell) in
            scripts(&plain)
                .into_iter()
                .zip([Shell::Bash, Shell::Zsh, Shell::Fish])
        {
            let mut theirs = Vec::new();
            clap_complete::generate(shell, &mut plain.clone(), "tool", &mut theirs);
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs),
                "{file}"
            );
        }
    }

    #[test]
    fn hidden_subcommands_are_not_offered() {
        let with = scripts(&sample(true));
        let without = scripts(&sample(false));
        for ((file, a), (_, b)) in with.iter().zip(&without) {
            let a = String::from_utf8_lossy(a);
            assert!(!a.contains("generate"), "{file} offers it:\n{a}");
            assert!(a.contains("ping") && a.contains("deep"), "{file}:\n{a}");
            assert_eq!(a, String::from_utf8_lossy(b), "{file}");
        }
        // What this guards against: clap_complete alone offers it.
        let mut raw = Vec::new();
        clap_complete::generate(Shell::Bash, &mut sample(true), "tool", &mut raw);
        assert!(String::from_utf8_lossy(&raw).contains("generate-docs"));
    }
}
