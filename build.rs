//! Build facts for `licagent --version`: the commit, the target and the
//! profile the binary was built with. Nothing here changes the code.

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        // A source tarball has no git: say so rather than guess.
        .unwrap_or_else(|| "unknown".to_string());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    let target = std::env::var("TARGET").unwrap_or_default();
    // PROFILE says only debug or release; the folder names the real one
    // (target/<triple>/appliance/build/...).
    let out_dir = std::env::var("OUT_DIR").unwrap_or_default();
    let profile = ["appliance", "release", "debug"]
        .into_iter()
        .find(|p| out_dir.contains(&format!("/{p}/build/")))
        .map(str::to_string)
        .unwrap_or_else(|| std::env::var("PROFILE").unwrap_or_default());
    println!(
        "cargo:rustc-env=LICAGENT_COMMIT={commit}{}",
        if dirty { "-modified" } else { "" }
    );
    println!("cargo:rustc-env=LICAGENT_TARGET={target}");
    println!("cargo:rustc-env=LICAGENT_PROFILE={profile}");
    // Rebuilt when HEAD moves; the paths may not exist (a worktree, a
    // tarball), which cargo treats as always changed only if they vanish.
    for p in [".git/HEAD", ".git/index"] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
