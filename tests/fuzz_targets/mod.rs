//! The fuzz targets: every parser of outside input and the handling of
//! signed payloads, each a function from bytes to nothing that must never
//! panic. Shared by the seeded runner on stable Rust (`tests/fuzz.rs`,
//! part of `cargo test`) and by the cargo-fuzz crate for nightly users
//! (`fuzz/`, which includes this file by path). Seeds for each target are
//! here too, so both start from inputs that reach deep.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use data_encoding::BASE64;
use licagent::api::types::{ActivateBody, RequestCodeBody};
use licagent::api::users::{AddonBody, ProfileBody, Query};
use licagent::config::Config;
use licagent::daemon::agent::users::UsersExport;
use licagent::hwid::{self, Component, ComponentKind};
use licagent::license::{
    self, Enforcement, KeyRing, LicenseKind, LicensePayload, PortalKey, SigningKey, Term, TermKind,
    SIGNING_DOMAIN,
};
use licagent::portal::wire::{
    DeactivateResponse, ErrorBody, LicenseResponse, RequestCode, SignedRevocation,
};
use licagent::seats::{self, Ledger, LedgerSettings, Limits, NewUser, Op, UserKind};

/// A target: a name and the function the fuzzer drives.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order the runner reports them.
pub const TARGETS: &[Target] = &[
    ("license_armor", license_armor),
    ("license_verify", license_verify),
    ("signed_payload", signed_payload),
    ("portal_key", portal_key),
    ("key_list", key_list),
    ("config", config),
    ("users_csv", users_csv),
    ("users_export", users_export),
    ("api_bodies", api_bodies),
    ("portal_answers", portal_answers),
    ("request_code", request_code),
    ("log_level", log_level),
    ("hwid_files", hwid_files),
];

/// Now, for the targets: fixed, so a run is reproducible.
const NOW: i64 = 1_800_000_000;

/// The key licenses are signed with in these targets (the "vendor").
pub fn test_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().0)
}

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        let mut r = KeyRing::empty();
        r.add(test_key().public_key());
        r
    })
}

fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Armors `payload_bytes` signed by the test key, whatever they hold: how
/// a vendor tool with a bug would sign extreme values.
pub fn armor(payload_bytes: &[u8]) -> String {
    let mut msg = SIGNING_DOMAIN.to_vec();
    msg.extend_from_slice(payload_bytes);
    let sig = test_key().sign_bytes(&msg);
    format!(
        "{}\nKey-Id: {}\nSignature: {}\n\n{}\n{}\n",
        license::file::BEGIN,
        test_key().public_key().key_id(),
        BASE64.encode(&sig),
        BASE64.encode(payload_bytes),
        license::file::END
    )
}

pub fn license_armor(data: &[u8]) {
    let _ = license::parse(&text(data));
}

pub fn license_verify(data: &[u8]) {
    if let Ok(p) = license::verify(&text(data), ring()) {
        use_payload(&p);
    }
}

/// The payload bytes are signed as they are: every check after the
/// signature (format, shape, ranges) and everything that uses a verified
/// payload (state, refresh plan, seats) sees them.
pub fn signed_payload(data: &[u8]) {
    if let Ok(p) = license::verify(&armor(data), ring()) {
        use_payload(&p);
    }
}

/// What the agent does with a license that passed verification.
fn use_payload(p: &LicensePayload) {
    let _ = license::check(p, &p.hardware, NOW);
    for now in [
        0,
        NOW,
        p.issued_at,
        p.refresh_due.unwrap_or(0),
        p.term.ends_at.unwrap_or(0),
        i64::MAX,
        i64::MIN,
    ] {
        let _ = license::state_at(p, now);
        let _ = license::expiry_reason(p, now);
    }
    if let Some(due) = p.refresh_due {
        for r in [0, 7, u64::MAX] {
            let _ = licagent::daemon::link::plan(p.issued_at, due, 300, r);
        }
    }
    let _ = hwid::compare(&p.hardware, &[]);
    let limits = Limits::from_payload(p);
    let mut ledger = Ledger::new(limits, LedgerSettings::default());
    let codes: Vec<String> = p.catalog.iter().map(|e| e.code.clone()).take(8).collect();
    for (i, code) in codes.iter().enumerate() {
        let user = NewUser {
            id: format!("u{i}"),
            name: format!("U {i}"),
            extension: format!("{}", 100 + i),
            number: None,
            kind: UserKind::Regular,
            profile: Some(code.clone()),
            addons: codes.clone(),
        };
        if let Ok(plan) = ledger.plan(Op::Create(user), 0, NOW) {
            let _ = ledger.commit(plan);
        }
    }
    let _ = ledger.summary();
    let _ = ledger.seats_in_use();
    let _ = ledger.set_limits(Limits::from_payload(p));
}

pub fn portal_key(data: &[u8]) {
    if let Ok(k) = PortalKey::parse(&text(data)) {
        let _ = k.redacted();
    }
}

pub fn key_list(data: &[u8]) {
    let _ = KeyRing::parse_list(&text(data));
}

pub fn config(data: &[u8]) {
    if let Ok(c) = Config::parse(&text(data), Path::new("fuzz.toml")) {
        let _ = c.key_ring();
        let _ = c.socket_mode();
    }
}

fn seat_ledger() -> Ledger {
    let p = payload();
    let mut l = Ledger::new(Limits::from_payload(&p), LedgerSettings::default());
    for (id, ext, profile) in [("ann", "201", "premium"), ("bob", "202", "basic")] {
        let user = NewUser {
            id: id.into(),
            name: id.into(),
            extension: ext.into(),
            number: None,
            kind: UserKind::Regular,
            profile: Some(profile.into()),
            addons: vec!["mobile".into()],
        };
        let plan = l.plan(Op::Create(user), 0, NOW).expect("seed user");
        l.commit(plan).expect("seed user");
    }
    l
}

pub fn users_csv(data: &[u8]) {
    let _ = seats::csv::parse(data);
    let mut l = seat_ledger();
    if let Ok(import) = l.plan_import(data, 0, NOW) {
        let _ = l.commit(import.plan);
        let _ = l.summary();
    }
}

/// An export as `licagent restore` reads it, with the checks restore makes.
pub fn users_export(data: &[u8]) {
    let Ok(x) = serde_json::from_slice::<UsersExport>(data) else {
        return;
    };
    let mut l = Ledger::new(Limits::from_payload(&payload()), LedgerSettings::default());
    for u in x.users {
        let ok = seats::check_id(&u.id).is_ok()
            && seats::check_extension(&u.extension).is_ok()
            && seats::check_name(&u.name).is_ok()
            && u.profile
                .iter()
                .chain(&u.addons)
                .all(|h| seats::check_seq(h.seq).is_ok());
        if !ok {
            continue;
        }
        let user = NewUser {
            id: u.id,
            name: u.name,
            extension: u.extension,
            number: u.number,
            kind: u.kind,
            profile: u.profile.map(|h| h.code),
            addons: u.addons.into_iter().map(|h| h.code).collect(),
        };
        if let Ok(plan) = l.plan(Op::Create(user), 0, NOW) {
            let _ = l.commit(plan);
        }
    }
    let _ = l.summary();
}

/// JSON bodies and query strings of the local API.
pub fn api_bodies(data: &[u8]) {
    if let Ok(q) = Query::parse(&text(data)) {
        let _ = q.get("limit");
    }
    let _ = serde_json::from_slice::<licagent::api::users::EntitlementsBody>(data);
    let _ = licagent::api::users::percent_decode(&text(data));
    let _ = serde_json::from_slice::<ActivateBody>(data);
    let _ = serde_json::from_slice::<RequestCodeBody>(data);
    let _ = serde_json::from_slice::<ProfileBody>(data);
    let _ = serde_json::from_slice::<AddonBody>(data);
    let _ = serde_json::from_slice::<seats::UserUpdate>(data);
    if let Ok(user) = serde_json::from_slice::<NewUser>(data) {
        let mut l = seat_ledger();
        if let Ok(plan) = l.plan(Op::Create(user), 0, NOW) {
            let _ = l.commit(plan);
        }
    }
}

/// What the portal answers, as the agent reads it.
pub fn portal_answers(data: &[u8]) {
    if let Ok(r) = serde_json::from_slice::<LicenseResponse>(data) {
        license_verify(r.license.as_bytes());
    }
    let _ = serde_json::from_slice::<ErrorBody>(data);
    let _ = serde_json::from_slice::<DeactivateResponse>(data);
    if let Ok(r) = serde_json::from_slice::<SignedRevocation>(data) {
        let _ = r.verify_for(ring(), "SYS-1", "n");
    }
}

pub fn request_code(data: &[u8]) {
    let _ = RequestCode::decode(&text(data));
}

pub fn log_level(data: &[u8]) {
    let _ = licagent::daemon::logging::parse(&text(data));
}

/// Files the hardware ID reads, as a fake root: the input is split at NUL
/// bytes into machine-id, a NIC's address, addr_assign_type and type, the
/// DMI product UUID and cpuinfo.
pub fn hwid_files(data: &[u8]) {
    static ROOT: OnceLock<std::path::PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        std::env::temp_dir().join(format!("licagent-fuzz-hwid-{}", std::process::id()))
    });
    let files = [
        "etc/machine-id",
        "sys/class/net/eth0/address",
        "sys/class/net/eth0/addr_assign_type",
        "sys/class/net/eth0/type",
        "sys/class/dmi/id/product_uuid",
        "proc/cpuinfo",
    ];
    let mut parts = data.split(|&b| b == 0);
    for f in files {
        let path = root.join(f);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let _ = std::fs::write(&path, parts.next().unwrap_or(b""));
    }
    if let Ok(info) = hwid::collect(root) {
        let _ = hwid::compare(&info.components, &info.components);
    }
}

/// A license payload with the demo catalog, for seeds and ledgers.
pub fn payload() -> LicensePayload {
    let hardware = vec![
        hwid::hash_component(ComponentKind::MachineId, "m"),
        hwid::hash_component(ComponentKind::Mac, "00:11:22:33:44:55"),
    ];
    LicensePayload {
        format: license::payload::PAYLOAD_FORMAT,
        license_id: "LIC-1".into(),
        system_id: "SYS-1".into(),
        pbx_name: "pbx".into(),
        hardware_id: hwid::hardware_id(&hardware),
        hardware,
        kind: LicenseKind::Full,
        issued_at: NOW - 60,
        term: Term {
            kind: TermKind::Yearly,
            ends_at: Some(NOW + 365 * 86_400),
        },
        refresh_due: Some(NOW + 86_400),
        grace_secs: 14 * 86_400,
        enforcement: Enforcement::Hard,
        seats: BTreeMap::from([("premium".into(), 2), ("basic".into(), 5)]),
        addons: BTreeMap::from([("mobile".into(), 3), ("data_sources".into(), 1)]),
        catalog: LicensePayload::demo_catalog(),
        device_public_key: None,
        nonce: Some("n".into()),
        // Mutated too: the vendor's test-mode policy is a signed field.
        test_mode: Some(license::payload::TestModePolicy::DEFAULT),
    }
}

/// Seeds for `target`: valid inputs (and a few near misses) to mutate.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let payload_json = serde_json::to_vec(&payload()).unwrap();
    let signed = license::sign(&payload(), test_key());
    let s = |t: &str| t.as_bytes().to_vec();
    match target {
        "license_armor" | "license_verify" => vec![signed.into_bytes(), s("-----BEGIN LICAGENT LICENSE-----\nKey-Id: ab\n\nAA==\n-----END LICAGENT LICENSE-----\n")],
        "signed_payload" => {
            let mut trial = payload();
            trial.kind = LicenseKind::Trial;
            trial.term.ends_at = None;
            trial.refresh_due = None;
            vec![payload_json, serde_json::to_vec(&trial).unwrap()]
        }
        "portal_key" => vec![
            s(PortalKey::generate().as_str()),
            s("ABCD-EFGH-JKLM-NPQR-STUV"),
        ],
        "key_list" => vec![s(&format!(
            "# vendor keys\n{} {}\n",
            test_key().public_key().key_id(),
            test_key().public_key().to_base64()
        ))],
        "config" => vec![
            s(include_str!("../../config/licagent.toml")),
            s("version = 1\n[api]\nbody_timeout_secs = 30\n[log]\nlevel = \"info,licagent=debug\"\n"),
        ],
        "users_csv" => vec![
            s("extension,number,name,profile,mobile\n201,+41 1,Ann,premium,1\n203,,\"Lee, Carl\",basic,0\n"),
            s("extension,name\n300,X\n"),
        ],
        "users_export" => {
            let x = serde_json::json!({
                "format": 1, "system_id": "SYS-1", "pbx_name": "pbx",
                "exported_at": "2027-01-15T08:00:00Z",
                "users": [{"id": "ann", "name": "Ann", "extension": "201", "number": null,
                    "kind": "regular", "profile": {"code": "premium", "seq": 3},
                    "addons": [{"code": "mobile", "seq": 4}]}]
            });
            vec![x.to_string().into_bytes()]
        }
        "api_bodies" => vec![
            s("{\"key\":\"ABCD-EFGH\",\"rehost\":true}"),
            s("{\"id\":\"c\",\"name\":\"C\",\"extension\":\"205\",\"profile\":\"basic\",\"addons\":[\"mobile\"]}"),
            s("profile=premium&q=a%20b&limit=10&offset=2&licensed=yes"),
        ],
        "portal_answers" => vec![
            serde_json::to_vec(&LicenseResponse {
                license: license::sign(&payload(), test_key()),
                stamp: None,
            })
            .unwrap(),
            s("{\"error\":{\"code\":\"revoked\",\"message\":\"x\"}}"),
            s("{\"released\":true}"),
        ],
        "request_code" => {
            let code = RequestCode {
                key: "ABCD".into(),
                hardware_id: "hw".into(),
                components: vec![Component {
                    kind: ComponentKind::Mac,
                    hash: "00".repeat(32),
                }],
                device_public_key: test_key().public_key().to_base64(),
                nonce: "n".into(),
            };
            vec![code.encode().into_bytes()]
        }
        "log_level" => vec![s("info"), s("warn,licagent=debug")],
        "hwid_files" => vec![s(
            "0123456789abcdef0123456789abcdef\n\x0000:11:22:33:44:55\n\x000\n\x001\n\x004c4c4544-0042-3510-8052-b4c04f4a4c32\n\x00processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\n",
        )],
        _ => Vec::new(),
    }
}

/// Tokens the mutator inserts: numbers at the edges of every type the
/// agent reads, and the syntax of the formats above.
pub const DICTIONARY: &[&str] = &[
    "-9223372036854775808",
    "9223372036854775807",
    "18446744073709551615",
    "4294967295",
    "2147483647",
    "-1",
    "0",
    "1e308",
    "253402300800",
    "9007199254740993",
    "null",
    "true",
    "\"",
    ",",
    "=",
    ":",
    "[",
    "]",
    "{",
    "}",
    "\r\n",
    "\n",
    "%",
    "%ff",
    "\u{feff}",
    "-----",
    "lifetime",
    "trial",
    "\"seq\":",
    "\"issued_at\":",
    "\"refresh_due\":",
    "\"grace_secs\":",
    "\"units_per_seat\":",
];
