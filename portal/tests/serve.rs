//! The real `licportal` binary, initialised in a temporary folder and
//! serving HTTPS on 127.0.0.1:0, driven over TLS by a client that trusts
//! only the portal's own test CA.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use licagent::hwid::{self, Component, ComponentKind};
use licagent::license::{self, KeyRing, LicenseError, PortalKey, PublicKey, SigningKey};
use licagent::license::{LicenseKind, TermKind};
use licagent::portal::wire::{
    self, ActivateRequest, DeactivateRequest, DeactivateResponse, ErrorBody, ErrorCode,
    LicenseResponse, RefreshRequest, RequestCode, TrialRequest,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_licportal");

/// `licportal`, behind the emulator named in `LICAGENT_TEST_RUNNER` when the
/// tests run for another architecture (see `.cargo/config.toml`).
fn command() -> Command {
    let runner = std::env::var("LICAGENT_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(BIN);
            cmd
        }
        None => Command::new(BIN),
    }
}
/// Every wait in these tests ends by this long.
const WAIT: Duration = Duration::from_secs(20);

/// Runs a command, killing it if it outlives [`WAIT`].
fn run(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn licportal");
    let deadline = Instant::now() + WAIT;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("licportal {cmd:?} did not finish in {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Portal {
    _dir: tempfile::TempDir,
    data: PathBuf,
    ring: KeyRing,
    ca_pem: Vec<u8>,
    server: Option<Child>,
    addr_file: PathBuf,
    url: String,
}

impl Portal {
    /// `init` only.
    fn init() -> Portal {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("portal");
        let out = run(command().arg("--data").arg(&data).args([
            "--json",
            "init",
            "--names",
            "localhost,127.0.0.1",
        ]));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let public = PublicKey::from_base64(v["public_key"].as_str().unwrap()).unwrap();
        assert_eq!(v["key_id"].as_str().unwrap(), public.key_id());
        let ca = PathBuf::from(v["ca"].as_str().unwrap());
        let mut ring = KeyRing::empty();
        ring.add(public);
        Portal {
            ca_pem: std::fs::read(&ca).unwrap(),
            addr_file: dir.path().join("addr"),
            _dir: dir,
            data,
            ring,
            server: None,
            url: String::new(),
        }
    }

    /// `init`, then `serve` on port 0; returns once the address is known.
    fn start() -> Portal {
        let mut p = Portal::init();
        let child = command()
            .arg("--data")
            .arg(&p.data)
            .args(["serve", "--listen", "127.0.0.1:0", "--addr-file"])
            .arg(&p.addr_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        p.server = Some(child);
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            if let Ok(a) = std::fs::read_to_string(&p.addr_file) {
                break a;
            }
            assert!(Instant::now() < deadline, "the portal did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        let port = addr.trim().rsplit(':').next().unwrap().to_string();
        // The certificate names localhost; connect by name to check that.
        p.url = format!("https://localhost:{port}");
        p
    }

    /// An admin command; panics on failure.
    fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_output(args);
        assert!(
            out.status.success(),
            "licportal {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn cli_output(&self, args: &[&str]) -> Output {
        run(command().arg("--data").arg(&self.data).args(args))
    }

    fn cli_json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.cli(&all)).unwrap()
    }

    /// A customer and a PBX with premium=5,essential=10; returns (key, serial).
    fn add_pbx(&self) -> (String, String) {
        self.cli(&["customer", "add", "ACME"]);
        let v = self.cli_json(&[
            "pbx",
            "add",
            "--customer",
            "ACME",
            "--name",
            "Head office",
            "--term",
            "yearly",
            "--seats",
            "premium=5,essential=10",
            "--addons",
            "mobile=5",
        ]);
        (
            v["key"].as_str().unwrap().to_string(),
            v["serial"].as_str().unwrap().to_string(),
        )
    }

    fn client(&self) -> reqwest::Client {
        self.client_with_timeout(Duration::from_secs(15))
    }

    fn client_with_timeout(&self, timeout: Duration) -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&self.ca_pem).unwrap()])
            .timeout(timeout)
            .build()
            .unwrap()
    }

    async fn post(&self, path: &str, body: Vec<u8>, sig: Option<String>) -> (u16, Vec<u8>) {
        let mut req = self
            .client()
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(sig) = sig {
            req = req.header(wire::SIGNATURE_HEADER, sig);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.bytes().await.unwrap().to_vec())
    }

    /// As an agent of protocol 2 posts.
    async fn post_v2(&self, path: &str, body: Vec<u8>, sig: Option<String>) -> (u16, Vec<u8>) {
        let mut req = self
            .client()
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .header(wire::PROTOCOL_HEADER, "2")
            .body(body);
        if let Some(sig) = sig {
            req = req.header(wire::SIGNATURE_HEADER, sig);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.bytes().await.unwrap().to_vec())
    }

    async fn activate(&self, req: &ActivateRequest) -> (u16, Vec<u8>) {
        self.post(wire::ACTIVATE_PATH, serde_json::to_vec(req).unwrap(), None)
            .await
    }

    async fn rehost(&self, req: &ActivateRequest) -> (u16, Vec<u8>) {
        self.post(wire::REHOST_PATH, serde_json::to_vec(req).unwrap(), None)
            .await
    }

    async fn trial(&self, req: &TrialRequest) -> (u16, Vec<u8>) {
        self.post(wire::TRIAL_PATH, serde_json::to_vec(req).unwrap(), None)
            .await
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Portal {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Device {
    key: SigningKey,
    pkcs8: Vec<u8>,
    components: Vec<Component>,
}

impl Device {
    fn new(mac: &str) -> Device {
        let (key, pkcs8) = SigningKey::generate();
        Device {
            key,
            pkcs8,
            components: vec![
                hwid::hash_component(ComponentKind::MachineId, &format!("machine-{mac}")),
                hwid::hash_component(ComponentKind::Mac, mac),
            ],
        }
    }

    /// A board made from this one's image: the same machine-id and device
    /// key (the state folder was copied), another MAC.
    fn clone_with_mac(&self, mac: &str) -> Device {
        Device {
            key: SigningKey::from_pkcs8(&self.pkcs8).unwrap(),
            pkcs8: self.pkcs8.clone(),
            components: vec![
                self.components[0].clone(),
                hwid::hash_component(ComponentKind::Mac, mac),
            ],
        }
    }

    fn hardware_id(&self) -> String {
        hwid::hardware_id(&self.components)
    }

    fn activation(&self, key: &str) -> ActivateRequest {
        ActivateRequest {
            key: key.to_string(),
            hardware_id: self.hardware_id(),
            components: self.components.clone(),
            device_public_key: self.key.public_key().to_base64(),
            nonce: wire::new_nonce(),
            agent_version: "test".into(),
        }
    }

    fn trial(&self) -> TrialRequest {
        TrialRequest {
            hardware_id: self.hardware_id(),
            components: self.components.clone(),
            device_public_key: self.key.public_key().to_base64(),
            nonce: wire::new_nonce(),
            agent_version: "test".into(),
        }
    }

    fn refresh(&self, serial: &str) -> RefreshRequest {
        RefreshRequest {
            system_id: serial.to_string(),
            license_id: "lic-test".into(),
            hardware_id: self.hardware_id(),
            components: self.components.clone(),
            seats_in_use: BTreeMap::from([("premium".into(), 3)]),
            nonce: wire::new_nonce(),
            sent_at: licagent::time::now(),
            test_sessions: vec![],
        }
    }

    /// Body bytes and their signature header.
    fn signed<T: serde::Serialize>(&self, req: &T) -> (Vec<u8>, Option<String>) {
        let body = serde_json::to_vec(req).unwrap();
        let sig = wire::sign_request(&body, &self.key);
        (body, Some(sig))
    }
}

fn license_of(body: &[u8]) -> String {
    serde_json::from_slice::<LicenseResponse>(body)
        .unwrap_or_else(|e| {
            panic!(
                "not a license response ({e}): {}",
                String::from_utf8_lossy(body)
            )
        })
        .license
}

fn error_of(body: &[u8]) -> ErrorBody {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not an error body ({e}): {}", String::from_utf8_lossy(body)))
}

#[tokio::test(flavor = "multi_thread")]
async fn activate_refresh_edit_and_revoke() {
    let portal = Portal::start();
    let (key, serial) = portal.add_pbx();
    let dev = Device::new("00:11:22:33:44:55");

    // Activation: a valid license for this machine, answering this nonce.
    let req = dev.activation(&key);
    let (status, body) = portal.activate(&req).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let lic = license::verify(&license_of(&body), &portal.ring).unwrap();
    assert_eq!(lic.system_id, serial);
    assert_eq!(lic.pbx_name, "Head office");
    assert_eq!(lic.hardware_id, dev.hardware_id());
    assert_eq!(lic.nonce.as_deref(), Some(req.nonce.as_str()));
    assert_eq!(
        lic.device_public_key.as_deref(),
        Some(req.device_public_key.as_str())
    );
    assert_eq!(
        lic.seats,
        BTreeMap::from([("essential".into(), 10), ("premium".into(), 5)])
    );
    assert_eq!(lic.addons, BTreeMap::from([("mobile".into(), 5)]));
    assert_eq!(
        lic.catalog,
        licagent::license::LicensePayload::demo_catalog()
    );

    // Same machine again: a fresh license.
    let (status, body) = portal.activate(&dev.activation(&key)).await;
    assert_eq!(status, 200);
    let again = license::verify(&license_of(&body), &portal.ring).unwrap();
    assert_ne!(again.license_id, lic.license_id);

    // Seats edited at the portal arrive with the next refresh.
    portal.cli(&["pbx", "edit", &serial, "--seats", "premium=7"]);
    let refresh = dev.refresh(&serial);
    let (body, sig) = dev.signed(&refresh);
    let (status, resp) = portal
        .post(wire::REFRESH_PATH, body.clone(), sig.clone())
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let refreshed = license::verify(&license_of(&resp), &portal.ring).unwrap();
    assert_eq!(refreshed.seats, BTreeMap::from([("premium".into(), 7)]));
    assert_eq!(refreshed.nonce.as_deref(), Some(refresh.nonce.as_str()));
    let shown = portal.cli_json(&["pbx", "show", &serial]);
    assert_eq!(shown["seats_in_use"]["premium"], 3);
    assert!(shown["last_refresh_at"].is_i64());

    // The same request again is a replay.
    let (status, resp) = portal.post(wire::REFRESH_PATH, body, sig).await;
    assert_eq!(status, 401);
    assert_eq!(error_of(&resp).error.code, ErrorCode::Replayed);

    // Signed by another key.
    let stranger = Device::new("00:11:22:33:44:55");
    let (body, sig) = stranger.signed(&dev.refresh(&serial));
    let (status, resp) = portal.post(wire::REFRESH_PATH, body, sig).await;
    assert_eq!(status, 401);
    assert_eq!(error_of(&resp).error.code, ErrorCode::BadSignature);

    // A clock far off.
    let mut stale = dev.refresh(&serial);
    stale.sent_at -= 3600;
    let (body, sig) = dev.signed(&stale);
    let (status, resp) = portal.post(wire::REFRESH_PATH, body, sig).await;
    assert_eq!(status, 401);
    assert_eq!(error_of(&resp).error.code, ErrorCode::StaleRequest);

    // Revoked: 410 with a statement the agent can verify.
    portal.cli(&["pbx", "revoke", &serial, "--reason", "contract ended"]);
    let refresh = dev.refresh(&serial);
    let (body, sig) = dev.signed(&refresh);
    let (status, resp) = portal.post(wire::REFRESH_PATH, body, sig).await;
    assert_eq!(status, 410);
    let err = error_of(&resp);
    assert_eq!(err.error.code, ErrorCode::Revoked);
    let rev = err
        .revocation
        .expect("a revocation statement")
        .verify_for(&portal.ring, &serial, &refresh.nonce)
        .unwrap();
    assert_eq!(rev.reason, "contract ended");
    assert_eq!(rev.moved_to, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn bindings_move_by_rehost_and_deactivate() {
    let portal = Portal::start();
    let (key, serial) = portal.add_pbx();
    let first = Device::new("00:11:22:33:44:55");
    let second = Device::new("66:77:88:99:aa:bb");
    let third = Device::new("02:00:00:00:00:03");

    assert_eq!(portal.activate(&first.activation(&key)).await.0, 200);
    let (status, body) = portal.activate(&second.activation(&key)).await;
    assert_eq!(status, 409);
    let err = error_of(&body);
    assert_eq!(err.error.code, ErrorCode::BoundElsewhere);
    assert!(err.error.message.contains("licagent activate KEY --rehost"));

    // Rehost moves it; the old box learns it at its next refresh.
    let (status, body) = portal
        .post(
            wire::REHOST_PATH,
            serde_json::to_vec(&second.activation(&key)).unwrap(),
            None,
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let refresh = first.refresh(&serial);
    let (body, sig) = first.signed(&refresh);
    let (status, resp) = portal.post(wire::REFRESH_PATH, body, sig).await;
    assert_eq!(status, 410);
    let rev = error_of(&resp)
        .revocation
        .unwrap()
        .verify_for(&portal.ring, &serial, &refresh.nonce)
        .unwrap();
    assert_eq!(rev.moved_to, Some(second.hardware_id()));

    // Deactivate releases the binding: a third box activates plainly.
    let deactivate = DeactivateRequest {
        system_id: serial.clone(),
        license_id: "lic-test".into(),
        nonce: wire::new_nonce(),
        sent_at: licagent::time::now(),
    };
    let (body, sig) = second.signed(&deactivate);
    let (status, resp) = portal.post(wire::DEACTIVATE_PATH, body, sig).await;
    assert_eq!(status, 200);
    let released: DeactivateResponse = serde_json::from_slice(&resp).unwrap();
    assert!(released.released);
    let listed = portal.cli(&["pbx", "list"]);
    assert!(listed.contains("unbound"), "{listed}");
    assert_eq!(portal.activate(&third.activation(&key)).await.0, 200);
    let shown = portal.cli_json(&["pbx", "show", &serial]);
    assert_eq!(shown["hardware_id"], third.hardware_id());
}

#[tokio::test(flavor = "multi_thread")]
async fn rehosts_are_limited_until_the_vendor_resets_them() {
    let portal = Portal::start();
    let (key, serial) = portal.add_pbx();
    portal.cli(&["settings", "set", "rehost_limit=2"]);
    let a = Device::new("00:11:22:33:44:55");
    let b = Device::new("66:77:88:99:aa:bb");
    let c = Device::new("02:00:00:00:00:03");
    let rehosts = |portal: &Portal| portal.cli_json(&["pbx", "show", &serial])["rehosts"].clone();

    assert_eq!(portal.activate(&a.activation(&key)).await.0, 200);
    let (status, body) = portal.rehost(&b.activation(&key)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // Activating again where it is bound is no rehost.
    assert_eq!(portal.rehost(&b.activation(&key)).await.0, 200);
    assert_eq!(portal.activate(&b.activation(&key)).await.0, 200);
    let r = rehosts(&portal);
    assert_eq!(
        (r["count"].as_i64(), r["limit"].as_i64()),
        (Some(1), Some(2))
    );
    assert_eq!(r["period_days"], 365);
    assert!(r["next_at"].is_null());

    assert_eq!(portal.rehost(&a.activation(&key)).await.0, 200);
    let r = rehosts(&portal);
    assert_eq!(r["count"], 2);
    let next_at = r["next_at"].as_i64().expect("the limit is reached");
    assert!(next_at > licagent::time::now() + 364 * 86_400);

    // One more is refused, and says what to do.
    let (status, body) = portal.rehost(&c.activation(&key)).await;
    assert_eq!(status, 429);
    let err = error_of(&body).error;
    assert_eq!(err.code, ErrorCode::RehostLimit);
    for part in [
        "rehosted 2 times in the last 365 days",
        "the limit is 2 per 365 days",
        "the next rehost is possible from",
        &format!("licportal pbx reset-rehosts {serial}"),
    ] {
        assert!(err.message.contains(part), "{part:?} in {}", err.message);
    }
    // Nothing moved: the box it is on keeps working.
    let shown = portal.cli_json(&["pbx", "show", &serial]);
    assert_eq!(shown["hardware_id"], a.hardware_id());
    let (body, sig) = a.signed(&a.refresh(&serial));
    assert_eq!(portal.post(wire::REFRESH_PATH, body, sig).await.0, 200);

    // The list shows the count against the limit, for people and programs.
    let listed = portal.cli(&["pbx", "list"]);
    assert!(
        listed.contains("REHOSTS") && listed.contains("2/2"),
        "{listed}"
    );
    let listed = portal.cli_json(&["pbx", "list"]);
    assert_eq!(listed[0]["rehosts"]["count"], 2);
    assert_eq!(listed[0]["rehosts"]["next_at"], next_at);
    let text = portal.cli(&["pbx", "show", &serial]);
    assert!(
        text.contains("rehosts:      2 of 2 in the last 365 days"),
        "{text}"
    );

    // The vendor resets the count: the rehost goes through.
    let reset = portal.cli_json(&["pbx", "reset-rehosts", &serial]);
    assert_eq!(reset["rehosts"]["count"], 0);
    let (status, body) = portal.rehost(&c.activation(&key)).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let r = rehosts(&portal);
    assert_eq!(r["count"], 1);
    assert!(portal.cli_json(&["pbx", "show", &serial])["rehosts_reset_at"].is_i64());
    let out = portal.cli_output(&["pbx", "reset-rehosts", "SYS-0000-0000"]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trial_runs_once_per_machine() {
    let portal = Portal::start();
    let dev = Device::new("00:11:22:33:44:55");
    let trial_secs = 90 * 86_400;

    let req = dev.trial();
    let (status, body) = portal.trial(&req).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let first = license::verify(&license_of(&body), &portal.ring).unwrap();
    assert_eq!(first.kind, LicenseKind::Trial);
    assert!(first.system_id.starts_with("TRIAL-"), "{}", first.system_id);
    assert_eq!(first.pbx_name, "Trial");
    assert_eq!(first.hardware_id, dev.hardware_id());
    assert_eq!(first.nonce.as_deref(), Some(req.nonce.as_str()));
    assert_eq!(first.refresh_due, None);
    assert_eq!(first.term.kind, TermKind::Monthly);
    let ends = first.term.ends_at.unwrap();
    assert_eq!(ends, first.issued_at + trial_secs);
    assert!((ends - licagent::time::now() - trial_secs).abs() < 60);
    assert_eq!(first.seats["basic"], 5);
    assert_eq!(first.seats["premium"], 5);

    // Again from the same machine: a fresh license with the same end.
    let (status, body) = portal.trial(&dev.trial()).await;
    assert_eq!(status, 200);
    let again = license::verify(&license_of(&body), &portal.ring).unwrap();
    assert_ne!(again.license_id, first.license_id);
    assert_eq!(again.system_id, first.system_id);
    assert_eq!(again.term.ends_at, Some(ends));

    let trials = portal.cli_json(&["trial", "list"]);
    assert_eq!(trials[0]["hardware_id"], dev.hardware_id());
    assert_eq!(trials[0]["first_at"], first.issued_at);
    assert_eq!(trials[0]["ends_at"], ends);
    assert_eq!(trials[0]["downloads"], 2);
    let text = portal.cli(&["trial", "list"]);
    assert!(
        text.contains(&first.system_id) && text.contains("running"),
        "{text}"
    );

    // Shortened by the vendor, the trial is over: a key is needed now.
    portal.cli(&["settings", "set", "trial_secs=1"]);
    std::thread::sleep(Duration::from_secs(2));
    let (status, body) = portal.trial(&dev.trial()).await;
    assert_eq!(status, 409);
    let err = error_of(&body).error;
    assert_eq!(err.code, ErrorCode::TrialUsed);
    assert!(
        err.message.contains("the trial of this machine ended at") && err.message.contains("key"),
        "{}",
        err.message
    );
    assert!(portal.cli(&["trial", "list"]).contains("ended"));

    // Another machine gets its own trial.
    let other = Device::new("66:77:88:99:aa:bb");
    let (status, body) = portal.trial(&other.trial()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let lic = license::verify(&license_of(&body), &portal.ring).unwrap();
    assert_ne!(lic.system_id, first.system_id);
    assert_eq!(lic.term.ends_at, Some(lic.issued_at + 1));

    // A hardware ID that is not its components' is refused.
    let mut wrong = dev.trial();
    wrong.hardware_id = other.hardware_id();
    let (status, body) = portal.trial(&wrong).await;
    assert_eq!(status, 400);
    assert_eq!(error_of(&body).error.code, ErrorCode::BadRequest);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_their_codes() {
    let portal = Portal::start();
    let (key, _serial) = portal.add_pbx();
    let dev = Device::new("00:11:22:33:44:55");

    let (status, body) = portal
        .activate(&dev.activation(&PortalKey::generate().to_string()))
        .await;
    assert_eq!(status, 404);
    assert_eq!(error_of(&body).error.code, ErrorCode::UnknownKey);

    let mut wrong_hw = dev.activation(&key);
    wrong_hw.hardware_id = Device::new("aa:aa:aa:aa:aa:aa").hardware_id();
    let (status, body) = portal.activate(&wrong_hw).await;
    assert_eq!(status, 400);
    assert_eq!(error_of(&body).error.code, ErrorCode::BadRequest);

    let (body, sig) = dev.signed(&dev.refresh("SYS-0000-0000"));
    let (status, resp) = portal.post(wire::REFRESH_PATH, body, sig).await;
    assert_eq!(status, 404);
    assert_eq!(error_of(&resp).error.code, ErrorCode::UnknownSystem);

    let (status, resp) = portal
        .post(wire::ACTIVATE_PATH, b"{not json".to_vec(), None)
        .await;
    assert_eq!(status, 400);
    assert_eq!(error_of(&resp).error.code, ErrorCode::BadRequest);

    let (status, _) = portal
        .post(wire::ACTIVATE_PATH, vec![b' '; 100 * 1024], None)
        .await;
    assert_eq!(status, 413);

    let (status, _) = portal.post("/v1/nothing", b"{}".to_vec(), None).await;
    assert_eq!(status, 404);
    let resp = portal
        .client()
        .get(format!("{}{}", portal.url, wire::ACTIVATE_PATH))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_behave_as_documented() {
    let portal = Portal::start();
    let (key, serial) = portal.add_pbx();
    let dev = Device::new("00:11:22:33:44:55");

    portal.cli(&["fault", "set", "error500"]);
    let (status, body) = portal.activate(&dev.activation(&key)).await;
    assert_eq!(status, 500);
    assert_eq!(error_of(&body).error.code, ErrorCode::Internal);
    // Nothing happened behind the error.
    assert!(portal.cli_json(&["pbx", "show", &serial])["hardware_id"].is_null());

    portal.cli(&["fault", "set", "garbage"]);
    let (status, body) = portal.activate(&dev.activation(&key)).await;
    assert_eq!(status, 200);
    assert!(serde_json::from_slice::<Value>(&body).is_err());

    portal.cli(&["fault", "set", "wrong-nonce"]);
    let req = dev.activation(&key);
    let (status, body) = portal.activate(&req).await;
    assert_eq!(status, 200);
    let lic = license::verify(&license_of(&body), &portal.ring).unwrap();
    assert_ne!(lic.nonce.as_deref(), Some(req.nonce.as_str()));

    portal.cli(&["fault", "set", "unknown-signer"]);
    let (status, body) = portal.activate(&dev.activation(&key)).await;
    assert_eq!(status, 200);
    assert!(matches!(
        license::verify(&license_of(&body), &portal.ring),
        Err(LicenseError::UnknownKey(_))
    ));

    portal.cli(&["fault", "set", "slow:2"]);
    let started = Instant::now();
    assert_eq!(portal.activate(&dev.activation(&key)).await.0, 200);
    assert!(started.elapsed() >= Duration::from_secs(2));
    let quick = portal.client_with_timeout(Duration::from_millis(500));
    let res = quick
        .post(format!("{}{}", portal.url, wire::ACTIVATE_PATH))
        .body(serde_json::to_vec(&dev.activation(&key)).unwrap())
        .send()
        .await;
    assert!(res.unwrap_err().is_timeout());

    portal.cli(&["fault", "set", "down"]);
    let res = portal
        .client()
        .post(format!("{}{}", portal.url, wire::ACTIVATE_PATH))
        .body(serde_json::to_vec(&dev.activation(&key)).unwrap())
        .send()
        .await;
    assert!(res.is_err(), "a portal that is down must not answer");

    portal.cli(&["fault", "set", "none"]);
    let req = dev.activation(&key);
    let (status, body) = portal.activate(&req).await;
    assert_eq!(status, 200);
    let lic = license::verify(&license_of(&body), &portal.ring).unwrap();
    assert_eq!(lic.nonce.as_deref(), Some(req.nonce.as_str()));

    let out = portal.cli_output(&["fault", "set", "flaky"]);
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn offline_activation_round_trip() {
    let portal = Portal::start();
    let (key, serial) = portal.add_pbx();
    let dev = Device::new("00:11:22:33:44:55");
    let code = RequestCode {
        key: key.clone(),
        hardware_id: dev.hardware_id(),
        components: dev.components.clone(),
        device_public_key: dev.key.public_key().to_base64(),
        nonce: wire::new_nonce(),
    };
    let dir = tempfile::tempdir().unwrap();
    let request = dir.path().join("request.txt");
    std::fs::write(
        &request,
        format!("Hi, here is our code:\n\n{}\nRegards\n", code.encode()),
    )
    .unwrap();
    let out_file = dir.path().join("license.txt");
    portal.cli(&[
        "offline-activate",
        request.to_str().unwrap(),
        "-o",
        out_file.to_str().unwrap(),
    ]);
    let lic = license::verify(&std::fs::read_to_string(&out_file).unwrap(), &portal.ring).unwrap();
    assert_eq!(lic.system_id, serial);
    assert_eq!(lic.hardware_id, dev.hardware_id());
    assert_eq!(lic.nonce.as_deref(), Some(code.nonce.as_str()));

    // The device registered offline can refresh online later.
    let (body, sig) = dev.signed(&dev.refresh(&serial));
    assert_eq!(portal.post(wire::REFRESH_PATH, body, sig).await.0, 200);

    // A request for another machine is refused like /v1/activate would.
    let other = Device::new("66:77:88:99:aa:bb");
    let code = RequestCode {
        hardware_id: other.hardware_id(),
        components: other.components.clone(),
        ..code
    };
    std::fs::write(&request, code.encode()).unwrap();
    let out = portal.cli_output(&["offline-activate", request.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--rehost"));
}

#[test]
fn admin_commands_check_their_input() {
    let portal = Portal::init();
    // init never replaces a key.
    let out = portal.cli_output(&["init"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refuses to overwrite"));
    assert_eq!(mode(&portal.data), 0o700);
    assert_eq!(mode(&portal.data.join("signing.pk8")), 0o600);
    assert_eq!(mode(&portal.data.join("tls/key.pem")), 0o600);

    portal.cli(&["customer", "add", "ACME"]);
    let out = portal.cli_output(&[
        "pbx",
        "add",
        "--customer",
        "ACME",
        "--name",
        "X",
        "--term",
        "yearly",
        "--seats",
        "platinum=3",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("platinum") && err.contains("premium"), "{err}");

    // People get the grouped key and the serial.
    let text = portal.cli(&[
        "pbx",
        "add",
        "--customer",
        "ACME",
        "--name",
        "Lab",
        "--term",
        "monthly",
        "--seats",
        "basic=1",
    ]);
    let key_line = text.lines().find(|l| l.starts_with("key:")).unwrap();
    let key = PortalKey::parse(key_line.trim_start_matches("key:")).unwrap();
    assert!(key_line.contains('-'));
    let serial_line = text.lines().find(|l| l.starts_with("serial:")).unwrap();
    let serial = serial_line.trim_start_matches("serial:").trim();
    assert!(serial.starts_with("SYS-"));
    let shown = portal.cli_json(&["pbx", "show", serial]);
    assert_eq!(shown["term"], "monthly");
    assert_eq!(
        PortalKey::parse(shown["key"].as_str().unwrap()).unwrap(),
        key
    );
    portal.cli(&["pbx", "edit", serial, "--term", "lifetime"]);
    assert!(portal.cli_json(&["pbx", "show", serial])["ends_at"].is_null());
    assert!(!portal
        .cli_output(&["pbx", "edit", serial, "--ends-at", "2000000000"])
        .status
        .success());

    let v = portal.cli_json(&["settings", "set", "refresh_secs=60", "grace_secs=120"]);
    assert_eq!(v["refresh_secs"], 60);
    assert_eq!(v["rehost_limit"], 3);
    assert_eq!(v["trial_seats"], "basic=5,business=5,essential=5,premium=5");
    let v = portal.cli_json(&[
        "settings",
        "set",
        "rehost_limit=5",
        "rehost_period_days=30",
        "trial_secs=3600",
        "trial_seats=premium=2",
    ]);
    assert_eq!(v["rehost_limit"], 5);
    assert_eq!(v["rehost_period_days"], 30);
    assert_eq!(v["trial_secs"], 3600);
    assert_eq!(v["trial_seats"], "premium=2");
    // One bad pair stores none of them.
    let out = portal.cli_output(&["settings", "set", "trial_secs=60", "trial_seats=gold=1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("gold"));
    assert_eq!(portal.cli_json(&["settings", "show"])["trial_secs"], 3600);
    let text = portal.cli(&["settings", "show"]);
    assert!(text.contains("rehost_period_days=30"), "{text}");
    assert!(!portal
        .cli_output(&["settings", "set", "refresh=60"])
        .status
        .success());
}

#[tokio::test(flavor = "multi_thread")]
async fn settings_shape_licenses_and_sigterm_stops_the_server() {
    let mut portal = Portal::start();
    let (key, _) = portal.add_pbx();
    portal.cli(&["settings", "set", "refresh_secs=60", "grace_secs=120"]);
    let dev = Device::new("00:11:22:33:44:55");
    let (status, body) = portal.activate(&dev.activation(&key)).await;
    assert_eq!(status, 200);
    let lic = license::verify(&license_of(&body), &portal.ring).unwrap();
    assert_eq!(lic.refresh_due, Some(lic.issued_at + 60));
    assert_eq!(lic.grace_secs, 120);

    let mut child = portal.server.take().unwrap();
    let pid = child.id().to_string();
    assert!(run(Command::new("kill").args(["-TERM", &pid]))
        .status
        .success());
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the portal did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    assert!(!portal.addr_file.exists());
    portal.stop();
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_carries_a_signed_stamp_and_old_agents_are_served() {
    let portal = Portal::start();
    let (key, serial) = portal.add_pbx();
    let dev = Device::new("00:11:22:33:44:55");
    let req = dev.activation(&key);
    let (status, body) = portal
        .post_v2(wire::ACTIVATE_PATH, serde_json::to_vec(&req).unwrap(), None)
        .await;
    assert_eq!(status, 200);
    let resp: LicenseResponse = serde_json::from_slice(&body).unwrap();
    let stamp = resp
        .stamp
        .expect("a stamp")
        .verify_for(&portal.ring, &req.nonce)
        .unwrap();
    assert!((stamp.now - licagent::time::now()).abs() < 60);
    assert_eq!(stamp.code, None);

    // A refusal is stamped too, with its code: a stale request tells the
    // agent the portal's time.
    let mut stale = dev.refresh(&serial);
    stale.sent_at -= 365 * 86_400;
    let (body, sig) = dev.signed(&stale);
    let (status, resp) = portal.post_v2(wire::REFRESH_PATH, body, sig).await;
    assert_eq!(status, 401);
    let err = error_of(&resp);
    assert_eq!(err.error.code, ErrorCode::StaleRequest);
    let stamp = err
        .stamp
        .expect("a stamp on the refusal")
        .verify_for(&portal.ring, &stale.nonce)
        .unwrap();
    assert_eq!(stamp.code, Some(ErrorCode::StaleRequest));

    // An agent of protocol 1 (no header) is served as before, and gets no
    // field its license parser would refuse (it denies unknown fields),
    // even when the vendor set a test mode policy for the PBX.
    portal.cli(&["pbx", "test-policy", &serial, "--cooldown-secs", "60"]);
    let refresh = dev.refresh(&serial);
    let (body, sig) = dev.signed(&refresh);
    let (status, resp) = portal.post(wire::REFRESH_PATH, body, sig).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let v: Value = serde_json::from_slice(&resp).unwrap();
    let text = v["license"].as_str().unwrap();
    let lic = license::verify(text, &portal.ring).unwrap();
    assert_eq!(lic.nonce.as_deref(), Some(refresh.nonce.as_str()));
    assert_eq!(lic.test_mode, None);
    assert!(!payload_json(text).contains("test_mode"));
    // An agent of protocol 2 gets the policy, signed.
    let refresh = dev.refresh(&serial);
    let (body, sig) = dev.signed(&refresh);
    let (status, resp) = portal.post_v2(wire::REFRESH_PATH, body, sig).await;
    assert_eq!(status, 200);
    let lic = license::verify(&license_of(&resp), &portal.ring).unwrap();
    assert_eq!(lic.test_mode.map(|p| p.cooldown_secs), Some(60));
}

/// The payload JSON of an armored license, as signed.
fn payload_json(armored: &str) -> String {
    let signed = license::parse(armored).unwrap();
    String::from_utf8(signed.payload_bytes.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cloned_board_is_caught_and_refused_with_a_signed_duplicate() {
    let portal = Portal::start();
    let (key, serial) = portal.add_pbx();
    let first = Device::new("00:11:22:33:44:55");
    let clone = first.clone_with_mac("00:11:22:33:44:66");
    assert_ne!(first.hardware_id(), clone.hardware_id());
    assert_eq!(portal.activate(&first.activation(&key)).await.0, 200);
    let refresh = |d: &Device| {
        let r = d.refresh(&serial);
        let (body, sig) = d.signed(&r);
        (r, body, sig)
    };

    // The clone's first refresh looks like a NIC swap and is followed.
    let (_, body, sig) = refresh(&clone);
    assert_eq!(portal.post_v2(wire::REFRESH_PATH, body, sig).await.0, 200);
    // The first box refreshes again: two boxes. It was first; it keeps it.
    let (_, body, sig) = refresh(&first);
    assert_eq!(portal.post_v2(wire::REFRESH_PATH, body, sig).await.0, 200);
    // The clone is refused, with a signed, specific error.
    let (r, body, sig) = refresh(&clone);
    let (status, resp) = portal.post_v2(wire::REFRESH_PATH, body, sig).await;
    assert_eq!(status, 409);
    let err = error_of(&resp);
    assert_eq!(err.error.code, ErrorCode::Duplicate);
    assert!(err.error.message.contains("in use on another box"));
    assert!(err.error.message.contains("--rehost"));
    let stamp = err
        .stamp
        .unwrap()
        .verify_for(&portal.ring, &r.nonce)
        .unwrap();
    assert_eq!(stamp.code, Some(ErrorCode::Duplicate));
    // An agent of protocol 1 gets a code it knows.
    let (_, body, sig) = refresh(&clone);
    let (status, resp) = portal.post(wire::REFRESH_PATH, body, sig).await;
    assert_eq!(status, 409);
    assert_eq!(error_of(&resp).error.code, ErrorCode::BoundElsewhere);
    // The first box goes on.
    let (_, body, sig) = refresh(&first);
    assert_eq!(portal.post_v2(wire::REFRESH_PATH, body, sig).await.0, 200);

    // The vendor sees it.
    let shown = portal.cli_json(&["pbx", "show", &serial]);
    assert_eq!(shown["duplicate"]["hardware_id"], clone.hardware_id());
    assert_eq!(shown["duplicate"]["kept_hardware_id"], first.hardware_id());
    assert!(shown["duplicate"]["attempts"].as_u64().unwrap() >= 2);
    assert_eq!(shown["seen_from"].as_array().unwrap().len(), 2);
    let text = portal.cli(&["pbx", "show", &serial]);
    assert!(text.contains("DUPLICATE"), "{text}");

    // A rehost onto the clone settles it: the clone holds the license, the
    // first box learns it was moved.
    let (status, _) = portal.rehost(&clone.activation(&key)).await;
    assert_eq!(status, 200);
    assert!(portal.cli_json(&["pbx", "show", &serial])["duplicate"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_device_key_still_in_use_is_a_duplicate() {
    let portal = Portal::start();
    let (key, serial) = portal.add_pbx();
    let first = Device::new("00:11:22:33:44:55");
    assert_eq!(portal.activate(&first.activation(&key)).await.0, 200);
    // A box with the same hardware ID but its own key activates: the
    // portal takes its key (a re-activation)...
    let mut second = Device::new("00:11:22:33:44:55");
    second.components = first.components.clone();
    assert_eq!(portal.activate(&second.activation(&key)).await.0, 200);
    // ...and the first key, still refreshing, is the other box.
    let r = first.refresh(&serial);
    let (body, sig) = first.signed(&r);
    let (status, resp) = portal.post_v2(wire::REFRESH_PATH, body, sig).await;
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&resp));
    assert_eq!(error_of(&resp).error.code, ErrorCode::Duplicate);
    let r = second.refresh(&serial);
    let (body, sig) = second.signed(&r);
    assert_eq!(portal.post_v2(wire::REFRESH_PATH, body, sig).await.0, 200);
}
