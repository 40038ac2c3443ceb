//! cargo-fuzz target `users_export`: see tests/fuzz_targets/mod.rs.
#![no_main]

#[path = "../../tests/fuzz_targets/mod.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::users_export(data));
