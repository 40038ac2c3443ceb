//! `licagent-gen DIR`: writes licagent's man pages and shell completions
//! under DIR, from the CLI definition itself (clap) and from
//! docs/config.md, so that they cannot drift from the binary and its docs.
//! scripts/deb.sh runs it and packages the result at Debian's paths:
//!
//!     DIR/man/licagent.8, licagent-SUBCOMMAND.8, licagent.toml.5
//!     DIR/completions/licagent.bash, _licagent, licagent.fish

mod markdown;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap_complete::Shell;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: licagent-gen DIR");
        return ExitCode::from(2);
    };
    match generate(&dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("licagent-gen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(dir: &Path) -> std::io::Result<()> {
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;

    let cmd = licagent::cli::command();
    std::fs::write(man.join("licagent.8"), main_page(&cmd)?)?;
    for sub in cmd.get_subcommands() {
        let name = format!("licagent-{}", sub.get_name());
        // clap takes a static name; this program runs once and exits.
        let page = sub.clone().name(&*Box::leak(name.clone().into_boxed_str()));
        let mut out = Vec::new();
        clap_mangen::Man::new(page).section("8").render(&mut out)?;
        out.extend_from_slice(see_also(&[("licagent", "8")]).as_bytes());
        std::fs::write(man.join(format!("{name}.8")), out)?;
    }
    let config = std::fs::read_to_string(repo().join("docs/config.md"))?;
    std::fs::write(man.join("licagent.toml.5"), config_page(&config))?;

    for (shell, file) in [
        (Shell::Bash, "licagent.bash"),
        (Shell::Zsh, "_licagent"),
        (Shell::Fish, "licagent.fish"),
    ] {
        let mut out = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "licagent", &mut out);
        std::fs::write(completions.join(file), out)?;
    }
    Ok(())
}

/// The repository root (this crate sits in tools/gen).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// licagent(8): clap's page, then exit status, files and pointers.
fn main_page(cmd: &clap::Command) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section("8")
        .render(&mut out)?;
    let cli = std::fs::read_to_string(repo().join("docs/cli.md"))?;
    let mut extra = String::new();
    extra.push_str(&markdown::section_to_roff(
        &cli,
        "Exit codes",
        "EXIT STATUS",
    ));
    extra.push_str(&markdown::section_to_roff(
        &cli,
        "`licagent status` exits by state",
        "STATUS EXIT CODES",
    ));
    extra.push_str(
        ".SH FILES\n.TP\n\\fI/etc/licagent/licagent.toml\\fR\nthe configuration, see \\fBlicagent.toml\\fR(5)\n\
         .TP\n\\fI/var/lib/licagent/licagent.db\\fR\nthe SQLite store: licenses, users, audit\n\
         .TP\n\\fI/var/lib/licagent/device.key\\fR\nthe device's private key (0600)\n\
         .TP\n\\fI/run/licagent/api.sock\\fR\nthe local API socket\n",
    );
    let subs: Vec<(String, &str)> = cmd
        .get_subcommands()
        .map(|s| (format!("licagent-{}", s.get_name()), "8"))
        .collect();
    let mut refs: Vec<(&str, &str)> = vec![("licagent.toml", "5")];
    refs.extend(subs.iter().map(|(n, s)| (n.as_str(), *s)));
    extra.push_str(&see_also(&refs));
    out.extend_from_slice(extra.as_bytes());
    Ok(out)
}

fn see_also(pages: &[(&str, &str)]) -> String {
    let list: Vec<String> = pages
        .iter()
        .map(|(n, s)| format!("\\fB{}\\fR({s})", markdown::escape(n)))
        .collect();
    format!(
        ".SH SEE ALSO\n{}\n.PP\nThe documentation in /usr/share/doc/licagent/.\n",
        list.join(", ")
    )
}

/// licagent.toml(5), from docs/config.md.
fn config_page(md: &str) -> String {
    let mut out = String::from(
        ".TH LICAGENT.TOML 5 \"\" \"licagent\" \"File Formats\"\n\
         .SH NAME\nlicagent.toml \\- configuration of licagent, the license agent for PBX appliances\n\
         .SH SYNOPSIS\n\\fI/etc/licagent/licagent.toml\\fR\n.SH DESCRIPTION\n",
    );
    out.push_str(&markdown::to_roff(md));
    out.push_str(&see_also(&[("licagent", "8")]));
    out
}
