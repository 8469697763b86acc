//! Man pages and shell completions from a clap definition, for packaging.
//! Shared by `ferryd` and `ferry`: both binaries have a hidden
//! `generate-docs DIR` subcommand, which `deploy/build-deb.sh` runs.
#![warn(missing_docs, unreachable_pub)]

/// Writes the man pages (the command's and one per subcommand) and shell
/// completions for `cmd` into `dir`: `man/manSECTION/NAME[-SUB].SECTION` and
/// `completions/{NAME.bash,_NAME,NAME.fish}`.
pub fn generate_docs(
    mut cmd: clap::Command,
    section: &str,
    dir: &std::path::Path,
) -> std::io::Result<()> {
    use clap_complete::Shell;
    let name = cmd.get_name().to_owned();
    let man_dir = dir.join("man").join(format!("man{section}"));
    std::fs::create_dir_all(&man_dir)?;
    std::fs::create_dir_all(dir.join("completions"))?;
    cmd.build();
    let mut pages = vec![(name.clone(), cmd.clone())];
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let page = format!("{name}-{}", sub.get_name());
        pages.push((page.clone(), sub.clone().name(page)));
    }
    for (page, command) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(command)
            .section(section)
            .render(&mut out)?;
        std::fs::write(man_dir.join(format!("{page}.{section}")), out)?;
    }
    for (shell, file) in [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut out);
        std::fs::write(dir.join("completions").join(file), out)?;
    }
    Ok(())
}
