//! The `licagent` subcommands.

/// Runs the CLI; returns the process exit code.
pub fn run(args: Vec<std::ffi::OsString>) -> i32 {
    let _ = args;
    0
}
