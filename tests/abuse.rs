//! The socket under abuse, with the real daemon: floods of idle, stalled
//! and slow connections from a socket-group user under a lowered
//! RLIMIT_NOFILE, huge and refused bodies, timeouts, and admin rights from
//! the caller's own groups. Hostile callers run as another uid: this test
//! binary re-runs itself as a child that drops to that uid.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

const CHILD_ENV: &str = "LICAGENT_ABUSE_CHILD";
const NOBODY: u32 = 65534;
/// A second unprivileged user: the PBX reading its entitlements.
const PBX_UID: u32 = 65533;

fn root() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    eprintln!("SKIPPED: needs root to act as other users");
    false
}

/// Sends one request and reads the whole answer (the daemon closes or
/// says content-length). `Err` is what the client saw instead.
fn request(socket: &Path, head: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(WAIT))?;
    s.set_write_timeout(Some(WAIT))?;
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    read_answer(&mut s)
}

fn read_answer(s: &mut UnixStream) -> std::io::Result<(u16, String)> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {line:?}")))?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn post(path: &str, len: usize) -> String {
    format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n")
}

/// A hostile child and its stdout.
struct Hostile {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Hostile {
    /// Reads the child's stdout until a line starting with `prefix`.
    fn line(&mut self, prefix: &str) -> String {
        loop {
            let mut line = String::new();
            if self.out.read_line(&mut line).unwrap_or(0) == 0 {
                panic!("the child ended without {prefix:?}");
            }
            if let Some(rest) = line.trim_end().strip_prefix(prefix) {
                return rest.to_string();
            }
        }
    }

    /// Closes its stdin (it lets go of what it holds) and waits.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs this test binary's `child` test as `uid`, in `mode`, with its
/// stdin a pipe: the child holds what it opened until that pipe closes.
fn spawn_child(mode: &str, uid: u32, socket: &Path, n: usize) -> Hostile {
    let module = module_path!();
    let module = module.split_once("::").map_or(module, |(_, rest)| rest);
    let name = if module == module_path!() {
        "child".to_string()
    } else {
        format!("{module}::child")
    };
    let exe = std::env::current_exe().unwrap();
    // Behind the emulator on an ARM target, like every spawned binary.
    let mut cmd = command(exe.to_str().unwrap());
    cmd.args([&name, "--exact", "--nocapture", "--include-ignored"])
        .env(CHILD_ENV, mode)
        .env("ABUSE_UID", uid.to_string())
        .env("ABUSE_SOCKET", socket)
        .env("ABUSE_N", n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = spawn(&mut cmd);
    let out = BufReader::new(child.stdout.take().unwrap());
    Hostile { child, out }
}

/// The hostile half, run as another uid by [`spawn_child`].
#[test]
#[ignore = "child process of the abuse tests"]
fn child() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let uid: u32 = std::env::var("ABUSE_UID").unwrap().parse().unwrap();
    let socket = std::path::PathBuf::from(std::env::var("ABUSE_SOCKET").unwrap());
    let n: usize = std::env::var("ABUSE_N").unwrap().parse().unwrap();
    drop_to(uid, &[]).expect("drop to the test uid");
    match mode.as_str() {
        // Idle connections, slow headers and stalled bodies, held open.
        "hold" => {
            let mut held = Vec::new();
            for i in 0..n {
                let Ok(mut s) = UnixStream::connect(&socket) else {
                    continue;
                };
                let _ = match i % 3 {
                    0 => Ok(()),
                    1 => s.write_all(b"GET /v1/status HTTP/1.1\r\nhost: x\r\n"),
                    _ => s.write_all(post("/v1/users", 1000).as_bytes()),
                };
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(500));
            let mut refused = 0;
            for s in &mut held {
                s.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 64];
                if let Ok(k) = s.read(&mut buf) {
                    if buf[..k].starts_with(b"HTTP/1.1 503") {
                        refused += 1;
                    }
                }
            }
            println!("refused={refused}");
            println!("held");
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        }
        // Bodies just under 1 MiB from a caller who may not send them.
        "refused-bodies" => {
            let body = vec![b'x'; 1024 * 1024 - 1];
            for _ in 0..n {
                match request(&socket, &post("/v1/users", body.len()), &body) {
                    Ok((status, text)) => println!("answer={status} {text}"),
                    Err(e) => println!("answer=error {e}"),
                }
            }
            println!("done");
        }
        other => panic!("unknown child mode {other}"),
    }
}

/// A daemon whose soft and hard RLIMIT_NOFILE are `nofile`.
fn start_limited(env: &Env, nofile: u64) -> Daemon {
    Daemon::start_cmd(env, &[], |cmd| {
        use std::os::unix::process::CommandExt;
        // SAFETY: one system call between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: nofile as libc::rlim_t,
                    rlim_max: nofile as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        }
    })
}

/// 300 hostile connections from one socket-group user against a daemon
/// with 128 file descriptors: root's status and another reader's checks
/// still answer, and the flood beyond the per-user cap is told why.
#[test]
fn a_flood_from_one_user_leaves_root_and_other_readers_served() {
    if !root() {
        return;
    }
    if std::env::var_os("LICAGENT_TEST_RUNNER").is_some_and(|r| !r.is_empty()) {
        // qemu-user holds descriptors of its own inside the daemon's
        // limit; the flood is measured on the host build.
        eprintln!("SKIPPED: under an emulator");
        return;
    }
    let env = Env::new();
    let mut d = start_limited(&env, 128);
    d.await_ready();
    let file = env.file("good.lic", &env.sign(&env.payload()));
    assert!(env
        .cli(&["import", file.to_str().unwrap()])
        .status
        .success());

    let mut child = spawn_child("hold", NOBODY, &env.socket, 300);
    let refused: usize = child.line("refused=").parse().unwrap();
    child.line("held");
    assert!(refused > 200, "only {refused} of 300 were refused");
    d.await_log("API connection limits", 1);

    for _ in 0..5 {
        let out = env.cli(&["status", "--json"]);
        assert!(out.status.success(), "root: {}", stderr(&out));
        assert_eq!(json(&out)["state"], "active");
        let out = env.cli_as(&["status", "--json"], Some(PBX_UID));
        assert!(out.status.success(), "reader: {}", stderr(&out));
    }
    // The flooding user itself is told what is wrong.
    let out = env.cli_as(&["status"], Some(NOBODY));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("connections open to the agent, the limit per user"),
        "{}",
        stderr(&out)
    );
    child.finish();
    // Its places are free again.
    let out = env.cli_as(&["status"], Some(NOBODY));
    assert!(out.status.success(), "{}", stderr(&out));
    d.stop();
}

/// A refused body is read before the refusal, so the caller sees the 403
/// (not a broken pipe), every time; same for a body over the limit.
#[test]
fn refusals_reach_the_caller_instead_of_a_broken_pipe() {
    if !root() {
        return;
    }
    let env = Env::new();
    let mut d = env.start();
    d.await_ready();
    let mut child = spawn_child("refused-bodies", NOBODY, &env.socket, 20);
    let mut answers = Vec::new();
    loop {
        let line = child.line("");
        if line == "done" {
            break;
        }
        if let Some(a) = line.strip_prefix("answer=") {
            answers.push(a.to_string());
        }
    }
    child.finish();
    assert_eq!(answers.len(), 20);
    for a in &answers {
        assert!(a.starts_with("403 "), "{a}");
        assert!(a.contains("licadmin"), "{a}");
    }

    // Root, over the 1 MiB limit: 413, read whole, 20 times in a row.
    let big = vec![b'x'; 2 * 1024 * 1024];
    for _ in 0..20 {
        let (status, text) = request(&env.socket, &post("/v1/license", big.len()), &big)
            .expect("the 413 reaches the caller");
        assert_eq!(status, 413, "{text}");
        assert!(text.contains("larger than 1048576 bytes"), "{text}");
    }
    // Announced far beyond anything drained: answered at once, then closed.
    let (status, _) = request(&env.socket, &post("/v1/license", 1 << 30), b"")
        .expect("the 413 is sent before the body");
    assert_eq!(status, 413);
    d.stop();
}

/// Headers and bodies that do not arrive are cut off after the configured
/// timeouts: an idle connection is closed, a stalled body answered 408.
#[test]
fn slow_headers_idle_connections_and_stalled_bodies_time_out() {
    let env = Env::new();
    env.add_api_settings("header_timeout_secs = 1\nbody_timeout_secs = 1");
    let mut d = env.start();
    d.await_ready();
    let closed = |mut s: UnixStream| {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = Vec::new();
        // Ends (EOF) when the daemon closes; WAIT if it never does.
        let start = Instant::now();
        let _ = s.read_to_end(&mut buf);
        assert!(start.elapsed() < WAIT, "the connection was never closed");
        buf
    };
    // Idle from the start.
    let s = UnixStream::connect(&env.socket).unwrap();
    closed(s);
    // Half a request line.
    let mut s = UnixStream::connect(&env.socket).unwrap();
    s.write_all(b"GET /v1/sta").unwrap();
    closed(s);
    // Idle after a first answer on a kept-alive connection.
    let mut s = UnixStream::connect(&env.socket).unwrap();
    s.write_all(b"GET /v1/status HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let (status, _) = read_answer(&mut s).unwrap();
    assert_eq!(status, 200);
    closed(s);
    // A body that stops halfway: 408, then closed.
    let mut s = UnixStream::connect(&env.socket).unwrap();
    s.write_all(post("/v1/users", 100).as_bytes()).unwrap();
    s.write_all(b"{\"id\":").unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let (status, text) = read_answer(&mut s).unwrap();
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("did not arrive within 1 seconds"), "{text}");
    d.stop();
}

/// The admin group counts when the calling process has it, whatever the
/// group database says; the refusal names the group that would allow it.
#[test]
fn admin_rights_come_from_the_callers_own_groups() {
    if !root() {
        return;
    }
    let Some(group) = ["adm", "sys", "daemon", "bin"]
        .iter()
        .find_map(|n| nix::unistd::Group::from_name(n).ok().flatten())
    else {
        eprintln!("SKIPPED: no spare system group to act as the admin group");
        return;
    };
    let gid = group.gid.as_raw();
    let env = Env::new();
    env.add_api_settings(&format!("admin_group = {:?}", group.name));
    let mut d = env.start();
    d.await_ready();
    let file = env.file("good.lic", &env.sign(&env.payload()));
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();

    // Not in the group: refused, told which group would do.
    let out = env.cli_with_groups(&["import", file.to_str().unwrap()], NOBODY, &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let want = format!("the group {} (gid {gid})", group.name);
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    // The same uid running with the group as a supplementary group (as
    // systemd's SupplementaryGroups= gives it): allowed.
    let out = env.cli_with_groups(&["import", file.to_str().unwrap()], NOBODY, &[gid]);
    assert!(out.status.success(), "{}", stderr(&out));
    d.stop();
}
