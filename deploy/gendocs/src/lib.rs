//! Man pages and shell completions of ferry's two binaries, generated from
//! their clap definitions for packaging. Both binaries have a hidden
//! `generate-docs DIR` subcommand that calls [`generate_docs`];
//! `deploy/build-deb.sh` and `deploy/install.sh` run it, and
//! `deploy/check.sh` checks what it wrote.
//!
//! # Layout
//! - [`generate_docs`]: writes every page and every completion script;
//! - `man`: one page per command and visible subcommand, clap_mangen's
//!   sections followed by the binary's own ones and a SEE ALSO that names
//!   only pages generated beside it;
//! - `prose`: those sections of each binary (configuration, signals, exit
//!   status, files), as data;
//! - `complete`: completion scripts that do not offer hidden subcommands.
#![warn(missing_docs, unreachable_pub)]

mod complete;
mod man;
mod prose;

use std::io;
use std::path::Path;

/// Writes the man pages (the command's and one per visible subcommand) and
/// the shell completions of `cmd` into `dir`:
/// `man/manSECTION/NAME[-SUB].SECTION` and
/// `completions/{NAME.bash,_NAME,NAME.fish}`.
pub fn generate_docs(cmd: clap::Command, section: &str, dir: &Path) -> io::Result<()> {
    let man_dir = dir.join("man").join(format!("man{section}"));
    std::fs::create_dir_all(&man_dir)?;
    for (page, text) in man::pages(&cmd, section)? {
        std::fs::write(man_dir.join(format!("{page}.{section}")), text)?;
    }
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    for (file, text) in complete::scripts(&cmd) {
        std::fs::write(completions.join(file), text)?;
    }
    Ok(())
}
