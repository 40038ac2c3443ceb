//! The fuzz targets (`tests/fuzz_targets/`) driven by a seeded mutator on
//! stable Rust: a fixed number of cases per target, the same inputs on
//! every run, so CI is reproducible and a failure names the case that
//! broke. A panic is caught, and the test fails with the target, the case
//! number and the input in base64.
//!
//! `cargo test --test fuzz` runs `DEFAULT_CASES` per target (sized for CI:
//! a few seconds in the dev profile). A longer run at release speed:
//!
//!     LICAGENT_FUZZ_CASES=1000000 cargo test --release --test fuzz -- --nocapture
//!
//! with `LICAGENT_FUZZ_SEED` to explore other inputs and
//! `LICAGENT_FUZZ_TARGET` to run one target. Each target prints its case
//! count and panics (0). For coverage-guided fuzzing with nightly Rust,
//! see `fuzz/README.md`.

mod fuzz_targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use data_encoding::BASE64;
use fuzz_targets::{seeds, DICTIONARY, TARGETS};

/// Cases per target in a plain `cargo test`.
const DEFAULT_CASES: u64 = 20_000;
/// Largest input the mutator builds.
const MAX_LEN: usize = 16 * 1024;

/// xorshift64*: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// One to eight random edits of `input`: bit flips, random or interesting
/// bytes, insertions and deletions, duplicated ranges, dictionary tokens,
/// numbers replaced by extremes, and splices with another seed.
fn mutate(rng: &mut Rng, input: &mut Vec<u8>, seeds: &[Vec<u8>]) {
    let edits = 1 + rng.below(8);
    for _ in 0..edits {
        let len = input.len();
        match rng.below(10) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = [0, 0xff, 0x7f, 0x80, b'"', b'\\', b'\n', b','][rng.below(8)];
            }
            2 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(32)).min(len);
                input.drain(a..b);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                let chunk = input[a..b].to_vec();
                let at = rng.below(len + 1);
                input.splice(at..at, chunk);
            }
            5 | 6 => {
                let token = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
                let at = rng.below(len + 1);
                input.splice(at..at, token.iter().copied());
            }
            7 => replace_number(rng, input),
            8 if !seeds.is_empty() => {
                let other = &seeds[rng.below(seeds.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = (a + 1 + rng.below(256)).min(other.len());
                    let at = rng.below(len + 1);
                    input.splice(at..at, other[a..b].iter().copied());
                }
            }
            _ if len > 0 => input.truncate(rng.below(len)),
            _ => input.push(rng.next() as u8),
        }
    }
    input.truncate(MAX_LEN);
}

/// Replaces one run of digits (with its sign) by an extreme number: how a
/// signed payload with `issued_at = i64::MIN` is made.
fn replace_number(rng: &mut Rng, input: &mut Vec<u8>) {
    let starts: Vec<usize> = (0..input.len())
        .filter(|&i| input[i].is_ascii_digit() && (i == 0 || !input[i - 1].is_ascii_digit()))
        .collect();
    if starts.is_empty() {
        return;
    }
    let mut a = starts[rng.below(starts.len())];
    let mut b = a;
    while b < input.len() && input[b].is_ascii_digit() {
        b += 1;
    }
    if a > 0 && input[a - 1] == b'-' {
        a -= 1;
    }
    let numbers = &DICTIONARY[..10];
    let n = numbers[rng.below(numbers.len())].as_bytes();
    input.splice(a..b, n.iter().copied());
}

fn cases() -> u64 {
    // Under qemu (the ARM suites) a tenth: emulation is about ten times
    // slower, and the targets' logic is the same as on the host.
    let emulated = std::env::var_os("LICAGENT_TEST_RUNNER").is_some_and(|r| !r.is_empty());
    std::env::var("LICAGENT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if emulated {
            DEFAULT_CASES / 10
        } else {
            DEFAULT_CASES
        })
}

#[test]
fn no_target_panics_on_mutated_inputs() {
    let seed: u64 = std::env::var("LICAGENT_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_1ca9);
    let only = std::env::var("LICAGENT_FUZZ_TARGET").ok();
    let cases = cases();
    // Panics are caught and reported below; the default hook would print
    // each one as it happens.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    let mut total = 0u64;
    let started = Instant::now();
    for (i, (name, target)) in TARGETS.iter().enumerate() {
        if only.as_deref().is_some_and(|o| o != *name) {
            continue;
        }
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "{name} has no seeds");
        // hwid_files writes files for every input: a tenth of the cases.
        let cases = if *name == "hwid_files" {
            (cases / 10).max(1)
        } else {
            cases
        };
        let mut rng = Rng(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let t = Instant::now();
        let mut panics = 0u64;
        // Seeds first, as they are, then mutations; every other case keeps
        // mutating the previous input, to get further from the seeds.
        let mut input = Vec::new();
        for case in 0..cases {
            if case < seeds.len() as u64 {
                input = seeds[case as usize].clone();
            } else {
                if case % 2 == 0 || input.is_empty() {
                    input = seeds[rng.below(seeds.len())].clone();
                }
                mutate(&mut rng, &mut input, &seeds);
            }
            if catch_unwind(AssertUnwindSafe(|| target(&input))).is_err() {
                panics += 1;
                if failures.len() < 10 {
                    failures.push(format!(
                        "{name} case {case}: input (base64) {}",
                        BASE64.encode(&input)
                    ));
                }
            }
        }
        total += cases;
        println!(
            "fuzz {name}: {cases} inputs, {panics} panics, {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    std::panic::set_hook(default_hook);
    let _ = std::fs::remove_dir_all(
        std::env::temp_dir().join(format!("licagent-fuzz-hwid-{}", std::process::id())),
    );
    println!(
        "fuzz total: {total} inputs in {:.1} s, seed {seed}",
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "panics:\n{}", failures.join("\n"));
}

/// The runner finds what it is meant to find: a target that panics on an
/// extreme number in a signed payload is caught within the default cases.
#[test]
fn the_mutator_reaches_extreme_numbers_in_signed_payloads() {
    let seeds = seeds("signed_payload");
    let mut rng = Rng(7);
    let mut hit = false;
    for _ in 0..DEFAULT_CASES {
        let mut input = seeds[0].clone();
        mutate(&mut rng, &mut input, &seeds);
        let text = String::from_utf8_lossy(&input);
        if text.contains("\"issued_at\":-9223372036854775808") {
            hit = true;
            break;
        }
    }
    assert!(hit, "the mutator never wrote issued_at = i64::MIN");
}

/// The seeds reach past the first checks: otherwise the mutations would
/// only ever exercise the parsers' error paths.
#[test]
fn seeds_are_accepted_whole() {
    use licagent::license::{self, KeyRing};
    let mut ring = KeyRing::empty();
    ring.add(fuzz_targets::test_key().public_key());
    let armored = String::from_utf8(seeds("license_verify")[0].clone()).unwrap();
    license::verify(&armored, &ring).expect("license seed");
    for p in seeds("signed_payload") {
        license::verify(&fuzz_targets::armor(&p), &ring).expect("payload seed");
    }
    let export = &seeds("users_export")[0];
    serde_json::from_slice::<licagent::daemon::agent::users::UsersExport>(export)
        .expect("export seed");
    let config = String::from_utf8(seeds("config")[0].clone()).unwrap();
    licagent::config::Config::parse(&config, std::path::Path::new("seed.toml"))
        .expect("config seed");
    let csv = &seeds("users_csv")[0];
    licagent::seats::csv::parse(csv).expect("csv seed");
    let code = String::from_utf8(seeds("request_code")[0].clone()).unwrap();
    licagent::portal::wire::RequestCode::decode(&code).expect("request code seed");
}
