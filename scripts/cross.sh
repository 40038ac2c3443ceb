#!/usr/bin/env bash
# Builds the agent for one target with the appliance profile, prints its
# stripped size, and tests it there: on an ARM target every test binary, and
# every licagent binary the tests start, runs under qemu-user (cargo's runner
# and LICAGENT_TEST_RUNNER, both set in .cargo/config.toml).
#
#   scripts/cross.sh TARGET [--full | --smoke | --build-only]
#
#   TARGET        aarch64-unknown-linux-gnu, armv7-unknown-linux-gnueabihf,
#                 or x86_64-unknown-linux-gnu (the host: build and size only)
#   --full        (default) the workspace's whole test suite for TARGET
#   --smoke       only the appliance binary itself under qemu: CLI, hardware
#                 ID, daemon, socket API and SQLite store (seconds, no test
#                 build; what CI runs for armv7)
#   --build-only  build and print the size
#
# Installs what it needs (Debian's cross gcc and libc, qemu-user, the rustup
# target). Uses CARGO_TARGET_DIR like every other script; the cross builds
# live in $CARGO_TARGET_DIR/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//' >&2
    exit 2
}

target="${1:-}"
mode="${2:---full}"
[ $# -le 2 ] || usage
case "$mode" in --full | --smoke | --build-only) ;; *) usage ;; esac

# The stripped appliance binary must stay within this on aarch64, the
# reference board (README: "ARM boards and packages"). Other targets only
# print their size.
AARCH64_BUDGET_BYTES=$((4 * 1024 * 1024))

case "$target" in
aarch64-unknown-linux-gnu)
    debs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user)
    runner=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
    ;;
armv7-unknown-linux-gnueabihf)
    debs=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross qemu-user)
    runner=(qemu-arm -L /usr/arm-linux-gnueabihf)
    ;;
x86_64-unknown-linux-gnu)
    debs=()
    runner=()
    if [ "$mode" != --build-only ]; then
        echo "cross.sh: the host's tests run in scripts/test.sh; building only" >&2
        mode=--build-only
    fi
    ;;
*) usage ;;
esac

[ "${#debs[@]}" -eq 0 ] || ensure_debs "${debs[@]}"
ensure_rust_targets "$target"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step "cargo build --profile appliance --target $target"
cargo build --locked --profile appliance --target "$target" -p licagent
bin="$CARGO_TARGET_DIR/$target/appliance/licagent"

# The profile strips already (strip = true); the size is the file's.
size=$(stat -c %s "$bin")
printf 'size: %s licagent (appliance, stripped): %d bytes (%s MiB)\n' \
    "$target" "$size" "$(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }')"
if [ "$target" = aarch64-unknown-linux-gnu ] && [ "$size" -gt "$AARCH64_BUDGET_BYTES" ]; then
    echo "cross.sh: the aarch64 binary is over its 4 MiB budget; see README.md before raising it" >&2
    exit 1
fi

# Runs the appliance binary through qemu as a board would: version, hardware
# ID from the ARM board fixture, then the daemon with its socket and SQLite
# store, queried by the CLI, stopped by SIGTERM.
smoke() {
    local state ok=0 failed=0
    smoke_dir=$(mktemp -d)
    # Stop the daemon and clean up, whatever happens.
    trap 'if [ -n "${smoke_pid:-}" ]; then kill -9 "$smoke_pid" 2>/dev/null || true; fi; rm -rf "$smoke_dir"' EXIT
    local dir=$smoke_dir
    check() {
        local what=$1
        shift
        if "$@"; then
            echo "smoke: ok: $what"
            ok=$((ok + 1))
        else
            echo "smoke: FAILED: $what" >&2
            failed=$((failed + 1))
        fi
    }
    local agent=("${runner[@]}" "$bin")
    check "--version" sh -c '"$@" --version | grep -q "^licagent "' sh "${agent[@]}"
    check "hwid of the ARM board fixture" sh -c \
        '"$@" hwid --json --root tests/fixtures/hwid/arm-board | grep -q "\"hardware_id\""' \
        sh "${agent[@]}"

    cat >"$dir/licagent.toml" <<EOF
version = 1
[paths]
state_dir = "$dir/state"
socket = "$dir/run/api.sock"
[hwid]
root = "$PWD/tests/fixtures/hwid/arm-board"
EOF
    "${agent[@]}" --config "$dir/licagent.toml" run 2>"$dir/daemon.log" &
    smoke_pid=$!
    # Ready when the CLI gets an answer; qemu makes start-up slower.
    for _ in $(seq 1 150); do
        # The exit code is the state's (11: unlicensed), and a failure is
        # JSON too ({"error": ...}): an answer is JSON with a state.
        state=$("${agent[@]}" --config "$dir/licagent.toml" status --json 2>/dev/null || true)
        case "$state" in *'"state"'*) break ;; esac
        state=""
        sleep 0.2
    done
    check "daemon answers status on its socket" test -n "$state"
    check "a fresh store is unlicensed" sh -c 'printf %s "$1" | grep -q "\"state\": *\"unlicensed\""' sh "$state"
    check "SQLite store created" test -s "$dir/state/licagent.db"
    kill -TERM "$smoke_pid"
    check "daemon exits 0 on SIGTERM" wait "$smoke_pid"
    smoke_pid=""
    if [ "$failed" -ne 0 ]; then
        echo "--- daemon log" >&2
        cat "$dir/daemon.log" >&2
    fi
    echo "smoke ($target): $ok passed, $failed failed"
    [ "$failed" -eq 0 ]
}

case "$mode" in
--build-only) ;;
--smoke)
    step "smoke test of the appliance binary under ${runner[0]}"
    smoke
    ;;
--full)
    step "cargo test --workspace --target $target (under ${runner[0]})"
    # Line tables only: backtraces keep file and line, and the cold test
    # build of every dependency for the target links faster.
    CARGO_PROFILE_DEV_DEBUG=line-tables-only \
        cargo test --locked --workspace --target "$target"
    ;;
esac
