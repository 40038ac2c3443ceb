//! A closed standard output ends the CLI the way it ends `cat` or `ls`:
//! `licagent users list | head` stops quietly when `head` has read enough.
//!
//! Rust ignores SIGPIPE, so a write into a closed pipe fails with EPIPE and
//! `println!` panics (exit 101, or SIGABRT in the appliance build, which
//! aborts on panic). The CLI's output goes through `println!` everywhere,
//! so rather than thread a writer through every command, this hook catches
//! exactly that failure: on EPIPE the process dies of SIGPIPE, as coreutils
//! do (the shell sees 141 and says nothing); on any other write error it
//! says so once and exits 1. Every other panic goes to the default hook.
//! SIGPIPE stays ignored otherwise, so a daemon that closes the socket is
//! still an error the CLI reports.

/// Installs the hook; call once, first thing in `main`.
pub fn install() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        let stream = if payload.starts_with("failed printing to stdout") {
            "standard output"
        } else if payload.starts_with("failed printing to stderr") {
            "standard error"
        } else {
            return default(info);
        };
        if payload.contains("Broken pipe") || payload.contains("os error 32") {
            die_of_sigpipe();
        }
        if stream == "standard output" {
            let detail = payload.split_once(": ").map_or(payload, |(_, d)| d);
            eprintln_quiet(&format!("licagent: cannot write to {stream}: {detail}"));
        }
        std::process::exit(1);
    }));
}

/// Restores SIGPIPE's default action and raises it.
fn die_of_sigpipe() -> ! {
    // SAFETY: signal and raise with a valid signal number.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Not reached: SIGPIPE's default action ends the process.
    std::process::exit(141)
}

/// Writes to stderr without panicking if that is closed too.
fn eprintln_quiet(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
