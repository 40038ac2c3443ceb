//! Figures for the seat accounting with 10,000 users: entitlement checks per
//! second, memory per user, the time to hand out every seat again after a
//! seat change, one change with and without the store, and a dry run of a
//! 10,000-row import. A plain program (`harness = false`) that prints its
//! figures: `cargo bench --bench seats`.
//!
//! Memory is measured with a counting global allocator: the bytes the ledger
//! holds, divided by the users (the allocator's own per-block overhead is
//! not included; add about 16 bytes per block on glibc).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use licagent::license::{Enforcement, LicenseKind, LicensePayload, Term, TermKind};
use licagent::seats::{self, Held, Ledger, LedgerSettings, Limits, Op, User, UserKind};
use licagent::store::Store;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters are only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        CALLS.fetch_add(1, Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Relaxed);
        LIVE.fetch_sub(layout.size(), Relaxed);
        CALLS.fetch_add(1, Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const USERS: usize = 10_000;
const ADDONS: [&str; 7] = [
    "mobile",
    "desktop_app",
    "ip_phone",
    "web_phone",
    "call_recording",
    "team_chat",
    "number",
];

/// A license a little short on seats, so that allocation has work to do.
fn limits(scale_percent: u32, enforcement: Enforcement) -> Limits {
    let s = |n: u32| n * scale_percent / 100;
    let p = LicensePayload {
        format: 1,
        license_id: "bench".into(),
        system_id: "S".into(),
        pbx_name: "pbx".into(),
        hardware_id: "hw".into(),
        hardware: Vec::new(),
        kind: LicenseKind::Full,
        issued_at: 0,
        term: Term {
            kind: TermKind::Lifetime,
            ends_at: None,
        },
        refresh_due: None,
        grace_secs: 0,
        enforcement,
        seats: [
            ("basic", s(600)),
            ("essential", s(3900)),
            ("business", s(3000)),
            ("premium", s(1950)),
            ("wizyconf", s(100)),
        ]
        .into_iter()
        .map(|(c, n)| (c.to_string(), n))
        .collect(),
        addons: ADDONS.iter().map(|c| (c.to_string(), s(3500))).collect(),
        catalog: LicensePayload::demo_catalog(),
        device_public_key: None,
        nonce: None,
        test_mode: None,
    };
    Limits::from_payload(&p)
}

fn users() -> Vec<User> {
    (0..USERS)
        .map(|i| {
            let profile = match i % 100 {
                0..=39 => "essential",
                40..=69 => "business",
                70..=89 => "premium",
                90..=94 => "basic",
                95..=98 => "service",
                _ => "wizyconf",
            };
            let seq = i as i64 + 1;
            User {
                id: format!("u{i:05}"),
                name: format!("Firstname Lastname {i:05}"),
                extension: format!("{}", 10_000 + i),
                number: Some(format!("+41 44 5{i:05}")),
                kind: if profile == "service" {
                    UserKind::Virtual
                } else {
                    UserKind::Regular
                },
                profile: Some(Held {
                    code: profile.into(),
                    seq,
                }),
                // Two add-ons per user on average, sorted by code as the
                // store keeps them.
                addons: (0..(i % 5))
                    .map(|k| ADDONS[(i + k) % ADDONS.len()].to_string())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .map(|code| Held { code, seq })
                    .collect(),
            }
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    println!("seat accounting, {USERS} users (cargo bench --bench seats)");

    // Memory held by the ledger.
    let before = LIVE.load(Relaxed);
    let mut ledger = Ledger::load(
        limits(100, Enforcement::Soft),
        LedgerSettings::default(),
        users(),
    );
    let held = LIVE.load(Relaxed) - before;
    println!(
        "memory: {:.1} MiB for the ledger, {} bytes per user",
        held as f64 / (1024.0 * 1024.0),
        held / USERS
    );

    // Entitlement checks: the hot path.
    let ids: Vec<String> = (0..USERS).map(|i| format!("u{i:05}")).collect();
    let calls = CALLS.load(Relaxed);
    let start = Instant::now();
    let mut checks = 0u64;
    let mut licensed = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        for id in &ids {
            let e = ledger.entitlement(black_box(id));
            if e.is_some_and(|e| e.licensed() && e.has("mobile")) {
                licensed += 1;
            }
        }
        checks += ids.len() as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let allocs = CALLS.load(Relaxed) - calls;
    println!(
        "entitlement checks: {:.2} million per second ({:.0} ns each), {allocs} allocations in {checks} checks ({licensed} licensed for mobile)",
        checks as f64 / secs / 1e6,
        secs * 1e9 / checks as f64
    );

    // A seat change: every seat handed out again.
    let mut flip = false;
    let recompute = time(21, || {
        flip = !flip;
        ledger.set_limits(limits(if flip { 80 } else { 100 }, Enforcement::Soft))
    });
    println!(
        "full recompute after a seat change: {:.2} ms",
        recompute.as_secs_f64() * 1e3
    );

    // One assignment in memory: plan, commit (which recomputes).
    let mut n = 0;
    let one = time(21, || {
        n += 1;
        let profile = if n % 2 == 0 { "premium" } else { "basic" };
        let op = Op::Assign {
            id: "u00001".into(),
            profile: profile.into(),
        };
        let plan = ledger.plan(op, 0, 0).unwrap_or_else(|e| panic!("{e}"));
        ledger.commit(plan).unwrap_or_else(|e| panic!("{e}"))
    });
    println!(
        "one assignment in memory (plan + commit): {:.2} ms",
        one.as_secs_f64() * 1e3
    );

    // The same through the store (SQLite, synchronous=FULL: one fsync).
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (mut store, _) =
        Store::open(&dir.path().join("bench.db")).unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    store
        .save_users(&users(), &[], &[])
        .unwrap_or_else(|e| panic!("{e}"));
    let save_all = t.elapsed();
    let t = Instant::now();
    let mut ledger = seats::load(
        &store,
        limits(100, Enforcement::Soft),
        LedgerSettings::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let load = t.elapsed();
    println!(
        "store: writing {USERS} users {:.0} ms, loading them into a ledger {:.0} ms",
        save_all.as_secs_f64() * 1e3,
        load.as_secs_f64() * 1e3
    );
    let mut n = 0;
    let stored = time(21, || {
        n += 1;
        let profile = if n % 2 == 0 { "premium" } else { "basic" };
        let op = Op::Assign {
            id: "u00001".into(),
            profile: profile.into(),
        };
        seats::apply(&mut ledger, &mut store, op, 0, 0).unwrap_or_else(|e| panic!("{e}"))
    });
    println!(
        "one assignment through the store (plan + write + audit + commit): {:.2} ms",
        stored.as_secs_f64() * 1e3
    );

    // A dry run of a full import: every row updates a user.
    let mut csv = String::from("extension,number,name,profile,mobile\n");
    for i in 0..USERS {
        csv.push_str(&format!("{},,Renamed {i:05},,{}\n", 10_000 + i, i % 2));
    }
    let dry = time(5, || {
        ledger
            .plan_import(csv.as_bytes(), 0, 0)
            .unwrap_or_else(|e| panic!("{e}"))
    });
    println!(
        "import dry run, {USERS} rows ({} KiB): {:.0} ms",
        csv.len() / 1024,
        dry.as_secs_f64() * 1e3
    );
}
