//! Checks of the systemd integration files under `systemd/`: the hardening
//! score of the service, `systemd-analyze verify` of both units against a
//! scratch root, and the sysusers/tmpfiles snippets run by the real tools
//! against scratch roots.
//!
//! `systemd-analyze` is required: without it the tests fail and say which
//! package to install, so that a CI image without systemd cannot pass them by
//! accident. `systemd-sysusers` and `systemd-tmpfiles` are used when present.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The ceiling for `systemd-analyze security`: 1.5 on its 0–10 scale.
const MAX_EXPOSURE: f64 = 1.5;
/// The same ceiling on the 0–100 scale of `--threshold`.
const THRESHOLD: &str = "15";
/// No systemd tool run here should take more than a few seconds.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Finds a systemd tool in the usual places, then on PATH.
fn find_tool(name: &str) -> Option<PathBuf> {
    let fixed = ["/usr/bin", "/bin"].iter().map(|d| Path::new(d).join(name));
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    fixed.chain(on_path).find(|p| p.is_file())
}

fn systemd_analyze() -> PathBuf {
    find_tool("systemd-analyze").unwrap_or_else(|| {
        panic!(
            "systemd-analyze was not found: install the `systemd` package \
             (CI installs it) to run the checks of the systemd units"
        )
    })
}

/// A command with a plain, stable output: no colours, no pager.
fn tool(path: &Path) -> Command {
    let mut cmd = Command::new(path);
    cmd.env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "")
        .env("SYSTEMD_LOG_COLOR", "0")
        .stdin(Stdio::null());
    cmd
}

/// Runs `cmd` to completion, killing it after `TOOL_TIMEOUT`.
fn run(mut cmd: Command) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {shown}: {e}"));
    // Drain both pipes on threads so that a chatty tool cannot block on a
    // full pipe while we wait for it.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the tool") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {TOOL_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The figure of the "Overall exposure level for X: 1.2 OK" line.
fn overall_exposure(report: &str) -> Option<f64> {
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))?;
    let (_, after) = line.rsplit_once(": ")?;
    after.split_whitespace().next()?.parse().ok()
}

/// `section -> key -> values` of a unit-style file, in file order per key.
fn parse_unit(path: &Path) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let body = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current = String::new();
    for line in body.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{}: not a key=value line: {line}", path.display()));
        sections
            .entry(current.clone())
            .or_default()
            .entry(key.trim().to_string())
            .or_default()
            .push(value.trim().to_string());
    }
    sections
}

/// The last value of a key (systemd's rule for single-valued settings).
fn value<'a>(
    unit: &'a BTreeMap<String, BTreeMap<String, Vec<String>>>,
    section: &str,
    key: &str,
) -> Option<&'a str> {
    unit.get(section)?.get(key)?.last().map(String::as_str)
}

/// Copies a directory tree, keeping symlinks as symlinks.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create the copy's directory");
    for entry in fs::read_dir(from).expect("read a unit directory") {
        let entry = entry.expect("read a unit directory entry");
        let kind = entry.file_type().expect("stat a unit directory entry");
        let dest = to.join(entry.file_name());
        if kind.is_symlink() {
            symlink(fs::read_link(entry.path()).expect("read a symlink"), &dest)
                .expect("copy a symlink");
        } else if kind.is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), &dest).expect("copy a unit file");
        }
    }
}

fn install_executable(from: &Path, to: &Path) {
    fs::create_dir_all(to.parent().expect("has a parent")).expect("create bin directory");
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
    fs::set_permissions(to, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
}

/// Looks `name` up in a passwd- or group-style file: its fields after the name.
fn entry_of(file: &Path, name: &str) -> Option<Vec<String>> {
    fs::read_to_string(file)
        .ok()?
        .lines()
        .map(|l| l.split(':').map(String::from).collect::<Vec<_>>())
        .find(|fields| fields.first().map(String::as_str) == Some(name))
}

/// A scratch root whose /etc holds the users and groups of the sysusers file.
fn root_with_our_users(sysusers: &Path) -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(root.path().join("etc")).expect("create etc");
    let mut cmd = tool(sysusers);
    cmd.arg(format!("--root={}", root.path().display()))
        .arg(repo_file("systemd/licagent.sysusers"));
    let out = run(cmd);
    assert!(
        out.status.success(),
        "systemd-sysusers failed:\n{}",
        text(&out)
    );
    root
}

#[test]
fn exposure_parser_reads_the_overall_line() {
    let report = "✓ UMask=   Files created by service are private\n\
                  → Overall exposure level for licagent.service: 1.2 OK 🙂\n";
    assert_eq!(overall_exposure(report), Some(1.2));
    assert_eq!(
        overall_exposure("-> Overall exposure level for x.service: 9.6 UNSAFE"),
        Some(9.6)
    );
    assert_eq!(overall_exposure("no summary here"), None);
}

#[test]
fn service_exposure_is_at_most_1_5() {
    let unit = repo_file("systemd/licagent.service");
    let mut cmd = tool(&systemd_analyze());
    cmd.args(["security", "--no-pager", "--offline=true"])
        .arg(format!("--threshold={THRESHOLD}"))
        .arg(&unit);
    let out = run(cmd);
    let report = text(&out);
    let exposure = overall_exposure(&report)
        .unwrap_or_else(|| panic!("no 'Overall exposure level' line in:\n{report}"));
    println!("systemd-analyze security: licagent.service exposure {exposure}");
    assert!(
        exposure <= MAX_EXPOSURE,
        "exposure {exposure} is above {MAX_EXPOSURE}:\n{report}"
    );
    assert!(
        out.status.success(),
        "systemd-analyze security failed:\n{report}"
    );
}

#[test]
fn units_pass_verify_under_a_scratch_root() {
    let analyze = systemd_analyze();
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(Path::new)
        .find(|d| d.join("sysinit.target").is_file())
        .unwrap_or_else(|| {
            panic!(
                "no systemd unit directory with sysinit.target: install the `systemd` \
                 package (CI installs it)"
            )
        });

    // verify resolves every path of the units under --root: the binaries must
    // exist and be executable there, and the default dependencies
    // (sysinit.target at least) must load. The whole stock unit directory is
    // copied rather than a hand-picked list, so that a systemd release that
    // adds a dependency does not break the test.
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path();
    let licagent = Path::new(env!("CARGO_BIN_EXE_licagent"));
    install_executable(licagent, &dir.join("usr/bin/licagent"));
    // ExecReload= runs /bin/kill; verify only checks that it is an executable
    // file, so any binary will do, and the host's procps is not needed.
    install_executable(licagent, &dir.join("bin/kill"));
    copy_tree(host_units, &dir.join("usr/lib/systemd/system"));
    let ours = dir.join("etc/systemd/system");
    fs::create_dir_all(&ours).expect("create etc/systemd/system");
    for unit in ["licagent.service", "licagent.socket"] {
        fs::copy(repo_file(&format!("systemd/{unit}")), ours.join(unit)).expect("copy our unit");
    }

    let mut cmd = tool(&analyze);
    cmd.args(["verify", "--no-pager"])
        .arg(format!("--root={}", dir.display()))
        .args(["licagent.service", "licagent.socket"]);
    let out = run(cmd);
    let report = text(&out);
    println!("systemd-analyze verify output:\n{report}");
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{report}"
    );
    // Unknown keys and bad values are only warnings (exit 0): every line that
    // names one of our units is a finding.
    let findings: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("licagent.service") || l.contains("licagent.socket"))
        .collect();
    assert!(
        findings.is_empty(),
        "verify warns about our units:\n{}",
        findings.join("\n")
    );
}

/// What the rest of the system relies on, and what a chase for a lower score
/// must not take away.
#[test]
fn units_keep_what_the_daemon_and_its_clients_rely_on() {
    let service = parse_unit(&repo_file("systemd/licagent.service"));
    let socket = parse_unit(&repo_file("systemd/licagent.socket"));
    let s = |key| value(&service, "Service", key);

    assert_eq!(s("Type"), Some("notify"));
    assert_eq!(
        s("ExecStart"),
        Some("/usr/bin/licagent run --config /etc/licagent/licagent.toml")
    );
    assert_eq!(s("User"), Some("licagent"));
    assert_eq!(s("Group"), Some("licagent"));
    // A reload checks the file first, so that `systemctl reload` fails for
    // a bad config; the check is the same binary and config as ExecStart.
    assert_eq!(
        service["Service"]["ExecReload"],
        [
            "/usr/bin/licagent check-config /etc/licagent/licagent.toml",
            "/bin/kill -HUP $MAINPID"
        ]
    );
    // A config error (exit 6, docs/cli.md) is not restarted in a loop.
    assert_eq!(
        s("RestartPreventExitStatus"),
        Some(licagent::cli::EXIT_CONFIG.to_string().as_str())
    );
    // The hardware ID reads /proc/cpuinfo, /sys/class/net and /sys/class/dmi.
    assert_eq!(s("ProcSubset"), None, "ProcSubset=pid hides /proc/cpuinfo");
    for key in ["InaccessiblePaths", "TemporaryFileSystem"] {
        for path in service["Service"].get(key).into_iter().flatten() {
            assert!(
                !path.contains("/sys") && !path.contains("/proc"),
                "{key}={path} hides what the hardware ID reads"
            );
        }
    }
    // A private user namespace turns callers into "nobody" in SO_PEERCRED.
    assert_ne!(s("PrivateUsers"), Some("yes"));
    // The socket lives in the service's RuntimeDirectory, which therefore must
    // survive restarts, and belongs to the service's user and group (systemd
    // chowns the directory's content to them on every start anyway).
    assert_eq!(s("RuntimeDirectory"), Some("licagent"));
    assert_eq!(s("RuntimeDirectoryPreserve"), Some("yes"));
    let k = |key| value(&socket, "Socket", key);
    assert_eq!(k("ListenStream"), Some("/run/licagent/api.sock"));
    assert_eq!(k("SocketUser"), s("User"));
    assert_eq!(k("SocketGroup"), s("Group"));
    assert_eq!(k("SocketMode"), Some("0660"));
    assert_eq!(k("Service"), Some("licagent.service"));
}

#[test]
fn sysusers_creates_the_service_user_and_both_groups() {
    let Some(sysusers) = find_tool("systemd-sysusers") else {
        println!("systemd-sysusers not installed: sysusers check not run");
        return;
    };
    let root = root_with_our_users(&sysusers);
    let passwd = root.path().join("etc/passwd");
    let group = root.path().join("etc/group");

    let user = entry_of(&passwd, "licagent").expect("user licagent in etc/passwd");
    let own_group = entry_of(&group, "licagent").expect("group licagent in etc/group");
    let admin_group = entry_of(&group, "licadmin").expect("group licadmin in etc/group");
    println!("passwd: {}", user.join(":"));
    // The user's primary group is the socket's group; home is the state dir.
    assert_eq!(
        user[3], own_group[2],
        "licagent's primary group is licagent"
    );
    assert_eq!(user[5], "/var/lib/licagent");
    let uid: u32 = user[2].parse().expect("numeric uid");
    assert!(uid > 0 && uid < 1000, "a system uid, got {uid}");
    // The daemon itself is no admin: membership of licadmin is for people.
    assert!(!admin_group[3].split(',').any(|m| m == "licagent"));
}

#[test]
fn tmpfiles_lets_group_licagent_read_the_dmi_serials() {
    let (Some(sysusers), Some(tmpfiles)) =
        (find_tool("systemd-sysusers"), find_tool("systemd-tmpfiles"))
    else {
        println!("systemd-sysusers or systemd-tmpfiles not installed: tmpfiles check not run");
        return;
    };
    if !nix::unistd::Uid::effective().is_root() {
        // The z lines chown to root:licagent, which only root may do.
        println!("not root: tmpfiles check not run (it needs to chown)");
        return;
    }
    let root = root_with_our_users(&sysusers);
    // The real layout: /sys/class/dmi/id is a symlink into /sys/devices.
    let real = root.path().join("sys/devices/virtual/dmi/id");
    fs::create_dir_all(&real).expect("create fake dmi dir");
    fs::create_dir_all(root.path().join("sys/class/dmi")).expect("create sys/class/dmi");
    symlink(
        "../../devices/virtual/dmi/id",
        root.path().join("sys/class/dmi/id"),
    )
    .expect("symlink");
    for (name, mode) in [
        ("product_uuid", 0o400),
        ("board_serial", 0o400),
        ("product_serial", 0o400),
    ] {
        fs::write(real.join(name), "fixture\n").expect("write fake attribute");
        fs::set_permissions(real.join(name), fs::Permissions::from_mode(mode)).expect("chmod");
    }

    let mut cmd = tool(&tmpfiles);
    cmd.arg(format!("--root={}", root.path().display()))
        .arg("--create")
        .arg(repo_file("systemd/licagent.tmpfiles"));
    let out = run(cmd);
    assert!(
        out.status.success(),
        "systemd-tmpfiles failed:\n{}",
        text(&out)
    );

    use std::os::unix::fs::MetadataExt;
    let gid: u32 = entry_of(&root.path().join("etc/group"), "licagent").expect("group")[2]
        .parse()
        .expect("numeric gid");
    for name in ["product_uuid", "board_serial"] {
        let meta = fs::metadata(real.join(name)).expect("stat attribute");
        assert_eq!(meta.mode() & 0o7777, 0o440, "{name} mode");
        assert_eq!((meta.uid(), meta.gid()), (0, gid), "{name} owner");
    }
    // Nothing beyond the two attributes the hardware ID needs.
    let other = fs::metadata(real.join("product_serial")).expect("stat attribute");
    assert_eq!(other.mode() & 0o7777, 0o400, "product_serial left alone");
}
