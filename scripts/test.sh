#!/usr/bin/env bash
# The project's test command (README quick start, and what CI runs): installs
# what the tests need on a fresh Debian 12 machine, then runs formatting,
# lints and every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# systemd-analyze, systemd-sysusers and systemd-tmpfiles check the units.
ensure_debs systemd
ensure_rust_components rustfmt clippy

# One target directory for every step, so nothing builds twice.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo test"
cargo test --workspace --locked
