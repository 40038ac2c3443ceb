#!/usr/bin/env bash
# The demo (README quick start): a reference portal and an agent on loopback,
# over real TLS, in a temporary folder. Creates a PBX on the portal, activates
# the agent with the printed key, shows the status, changes the seats on the
# portal and refreshes, adds three users and shows seats bought and used.
# Ends by itself and removes what it made.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
step "cargo build (licagent, licportal)"
cargo build --workspace --locked --quiet
bin="$CARGO_TARGET_DIR/debug"

work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

portal() { "$bin/licportal" --data "$work/portal" "$@"; }
agent() { "$bin/licagent" --config "$work/licagent.toml" "$@"; }
wait_for() { # file, what
    for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done
    echo "demo: $2 did not start" >&2; exit 1
}

step "licportal init (signing key, test CA, TLS certificate for 127.0.0.1)"
init=$(portal init --names localhost,127.0.0.1 --json)
echo "$init"
key_id=$(sed -n 's/.*"key_id": "\(.*\)".*/\1/p' <<<"$init")
pubkey=$(sed -n 's/.*"public_key": "\(.*\)".*/\1/p' <<<"$init")

step "licportal: a customer and a PBX with seats per profile"
portal customer add "Acme Corp" >/dev/null
pbx=$(portal pbx add --customer "Acme Corp" --name "Acme HQ" --term yearly \
    --seats premium=5,business=10,essential=25 --addons mobile=10 --json)
echo "$pbx"
pbx_key=$(sed -n 's/.*"key": "\(.*\)".*/\1/p' <<<"$pbx")
serial=$(sed -n 's/.*"serial": "\(.*\)".*/\1/p' <<<"$pbx")

step "licportal serve on 127.0.0.1, port chosen by the system"
"$bin/licportal" --data "$work/portal" serve --listen 127.0.0.1:0 --addr-file "$work/portal.addr" \
    >/dev/null 2>"$work/portal.log" &
pids+=($!)
wait_for "$work/portal.addr" "the portal"
addr=$(cat "$work/portal.addr")

cat >"$work/licagent.toml" <<CONF
version = 1
[paths]
state_dir = "$work/agent"
socket = "$work/agent/api.sock"
[hwid]
# This machine's own /sys, /etc and /proc.
root = "/"
[trust]
keys = ["$key_id $pubkey"]
[portal]
url = "https://$addr"
ca_file = "$work/portal/ca.pem"
CONF

step "licagent run (the daemon; logs in $work/agent.log)"
"$bin/licagent" --config "$work/licagent.toml" run >/dev/null 2>"$work/agent.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$work/agent/api.sock" ] && break; sleep 0.1; done

step "licagent status (before activation)"
agent status || true

step "licagent activate <the PBX key the portal printed>"
agent activate "$pbx_key"

step "licportal pbx edit: the order grows to 8 Premium seats; licagent refresh"
portal pbx edit "$serial" --seats premium=8,business=10,essential=25 >/dev/null
agent refresh

step "licagent users add: three PBX users (the second gets the default profile)"
agent users add 204 --name "Ann Smith" --extension 204 --profile premium >/dev/null
agent users add 205 --name "Lee Carl" --extension 205 >/dev/null
agent users add 299 --name "Front desk" --extension 299 --profile business >/dev/null
agent users list

step "licagent seats"
agent seats

step "licagent status --json"
agent status --json

step "licagent hwid"
agent hwid
echo
echo "demo: done (the portal and the agent stop now, and $work is removed)"
