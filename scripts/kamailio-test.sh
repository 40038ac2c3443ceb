#!/usr/bin/env bash
# The reference integration with a real SIP server (examples/kamailio/),
# tested end to end: Debian's Kamailio asks a real licagent, activated on a
# real licportal, on every REGISTER and INVITE that SIPp sends.
#
#   scripts/kamailio-test.sh
#
# Needs root (CI runs as root; it prints why and passes otherwise): it
# installs kamailio, kamailio-lua-modules, lua-socket, lua-cjson and
# sip-tester with apt-get when missing (with a policy-rc.d that keeps the
# packaged kamailio.service from starting on every interface), and runs
# Kamailio as user kamailio. Everything listens on 127.0.0.1 only, lives in
# a temporary folder and is stopped at the end, whatever happens.
#
# What it checks:
#   - 200 users (a mix of profiles, fewer seats than users, some without a
#     profile) and 10 extensions licagent does not know REGISTER through
#     Kamailio: 200 OK exactly for the users `licagent users list --json`
#     says are licensed, "403 License missing: <codes>" for those that
#     `users list --unlicensed --json` lists, 404 for the unknown ones;
#   - INVITEs: 403/404 for the caller likewise, emergency numbers never
#     blocked, 480 for a callee that is not registered;
#   - a seat change on the portal plus `licagent refresh` shows at the next
#     REGISTER;
#   - agent stopped: 503 with Retry-After (users licensed at their last check
#     keep registering for 10 minutes); agent started again: 200 again;
#   - the Python client (examples/python) gives the same verdicts;
#   - REGISTER/s with and without the check (printed, not asserted).
#
# Uses the debug binaries that `cargo test` builds (scripts/test.sh runs it
# first, so nothing builds twice). Settings from the environment:
#   LICAGENT_BIN_DIR=dir       licagent and licportal from there, no build
#   KAMAILIO_TEST_AGENT=file   the daemon from this binary (e.g. a release or
#                              appliance build, for the figures)
#   KAMAILIO_BENCH_REGISTERS=n REGISTERs per timed run (20000)
#   KAMAILIO_BENCH_ROUNDS=n    timed runs of each kind, alternating (3)
#   KAMAILIO_TEST_KEEP=1       keep the temporary folder (logs) at the end
# Ends with "kamailio: N passed, M failed" and exits non-zero on a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

if [ "$(id -u)" -ne 0 ]; then
    echo "kamailio-test: SKIPPED: it installs Kamailio and runs it as user kamailio, which needs root (CI runs as root)"
    exit 0
fi
repo=$PWD

work=$(mktemp -d)
# Kamailio (user kamailio) must reach the socket and read its config here.
chmod 0711 "$work"
pids=()
kam_pid=""
agent_pid=""
cleanup() {
    if [ -n "$kam_pid" ]; then kill "$kam_pid" 2>/dev/null || true; fi
    if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null || true; fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    restore_policy_rc
    if [ "${KAMAILIO_TEST_KEEP:-0}" = 1 ]; then
        echo "kamailio-test: kept $work (KAMAILIO_TEST_KEEP=1)"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# Debian's packages start their services on install: kept from starting
# (scripts/lib.sh, ensure_debs_no_start).
ensure_debs_no_start kamailio kamailio-lua-modules lua-socket lua-cjson sip-tester python3 iproute2 procps

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
if [ -n "${LICAGENT_BIN_DIR:-}" ]; then
    bin=$LICAGENT_BIN_DIR
else
    step "cargo build --workspace --locked (debug; already built by cargo test)"
    cargo build --workspace --locked --quiet
    bin="$CARGO_TARGET_DIR/debug"
fi
# The daemon's binary; KAMAILIO_TEST_AGENT=path runs another build of it
# (e.g. the appliance one) for the figures.
agent_bin=${KAMAILIO_TEST_AGENT:-$bin/licagent}

passed=0
failed=0
ok() {
    echo "kamailio: ok: $1"
    passed=$((passed + 1))
}
fail() {
    echo "kamailio: FAILED: $1" >&2
    failed=$((failed + 1))
}
check() { # what, command...
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else fail "$what"; fi
}
die() {
    echo "kamailio-test: $*" >&2
    for log in "$work"/*.log; do
        [ -s "$log" ] || continue
        echo "--- $log (last lines)" >&2
        tail -n 20 "$log" >&2
    done
    echo "kamailio: $passed passed, $((failed + 1)) failed"
    exit 1
}

# A free UDP port on 127.0.0.1 (the system's choice, released at once).
free_udp_port() {
    python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

portal() { "$bin/licportal" --data "$work/portal" "$@"; }
agent() { "$bin/licagent" --config "$work/licagent.toml" "$@"; }
client() { python3 examples/python/licagent_client.py --socket "$work/run/api.sock" "$@"; }

step "portal: init, a customer, a PBX with fewer seats than users, serve on 127.0.0.1"
init=$(portal init --names localhost,127.0.0.1 --json)
key_id=$(sed -n 's/.*"key_id": "\(.*\)".*/\1/p' <<<"$init")
pubkey=$(sed -n 's/.*"public_key": "\(.*\)".*/\1/p' <<<"$init")
portal customer add "Kamailio Test" >/dev/null
pbx=$(portal pbx add --customer "Kamailio Test" --name "SIP lab" --term yearly --enforcement soft \
    --seats premium=20,business=40,essential=80 --addons mobile=10 --json)
pbx_key=$(sed -n 's/.*"key": "\(.*\)".*/\1/p' <<<"$pbx")
serial=$(sed -n 's/.*"serial": "\(.*\)".*/\1/p' <<<"$pbx")
"$bin/licportal" --data "$work/portal" serve --listen 127.0.0.1:0 --addr-file "$work/portal.addr" \
    >/dev/null 2>"$work/portal.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/portal.addr" ] && break; sleep 0.1; done
[ -s "$work/portal.addr" ] || die "the portal did not start"

# The socket's group is kamailio's, as `usermod -aG licagent kamailio`
# gives on a real box (examples/kamailio/README.md).
mkdir -m 0755 "$work/run"
cat >"$work/licagent.toml" <<CONF
version = 1
[paths]
state_dir = "$work/agent"
socket = "$work/run/api.sock"
[api]
socket_mode = "0660"
socket_group = "kamailio"
[hwid]
root = "/"
[trust]
keys = ["$key_id $pubkey"]
[portal]
url = "https://$(cat "$work/portal.addr")"
ca_file = "$work/portal/ca.pem"
CONF

start_agent() {
    rm -f "$work/run/api.sock"
    "$agent_bin" --config "$work/licagent.toml" run >/dev/null 2>>"$work/agent.log" &
    agent_pid=$!
    # `status` exits by state (11: unlicensed); 3 is "not running".
    local rc
    for _ in $(seq 100); do
        rc=0
        agent status --check >/dev/null 2>&1 || rc=$?
        case $rc in 0 | 1[0-3]) return 0 ;; esac
        sleep 0.1
    done
    die "the agent did not start"
}
stop_agent() {
    kill -TERM "$agent_pid"
    wait "$agent_pid" || true
    agent_pid=""
}

step "agent: run, activate, import 200 users, take 10 profiles away"
start_agent
agent activate "$pbx_key" >/dev/null
# 30 premium (20 seats), 50 business (40), 110 essential (80), 10 premium
# with the mobile add-on; extensions 2000-2199. Then 10 essential users
# lose their profile (reason no_profile, nothing missing).
{
    echo "extension,number,name,profile,mobile"
    for i in $(seq 0 199); do
        ext=$((2000 + i))
        if [ "$i" -lt 30 ]; then p=premium m=0
        elif [ "$i" -lt 80 ]; then p=business m=0
        elif [ "$i" -lt 190 ]; then p=essential m=0
        else p=premium m=1; fi
        echo "$ext,,User $ext,$p,$m"
    done
} >"$work/users.csv"
agent users import "$work/users.csv" >/dev/null
for ext in $(seq 2180 2189); do agent users unassign "$ext" >/dev/null; done
agent users list --json >"$work/all.json"
agent users list --unlicensed --json >"$work/unlicensed.json"

# The SIPp injection files: the 200 users and 10 extensions nobody has.
{
    echo SEQUENTIAL
    for ext in $(seq 2000 2199) $(seq 9000 9009); do echo "$ext;"; done
} >"$work/register.csv"

sip_port=$(free_udp_port)
kam_dir="$work/kamailio"
mkdir -m 0755 "$kam_dir" "$kam_dir/run"
cp examples/kamailio/kamailio.cfg examples/kamailio/licagent.lua "$kam_dir/"
chmod 0644 "$kam_dir"/*
chown kamailio:kamailio "$kam_dir/run"

# Starts Kamailio as user kamailio on 127.0.0.1:$sip_port, with extra
# -A defines if given; waits until it answers OPTIONS.
start_kamailio() {
    kamailio -f "$kam_dir/kamailio.cfg" -DD -E -u kamailio -g kamailio \
        -Y "$kam_dir/run" -w "$kam_dir/run" -m 64 -M 8 \
        -A "SIP_LISTEN=udp:127.0.0.1:$sip_port" \
        -A "LICAGENT_SOCKET=\"$work/run/api.sock\"" \
        -A "LICAGENT_LUA=\"$kam_dir/licagent.lua\"" "$@" \
        >>"$work/kamailio.log" 2>&1 &
    kam_pid=$!
    for _ in $(seq 100); do
        if python3 - "$sip_port" <<'PY' 2>/dev/null; then return 0; fi
import socket, sys
port = int(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
s.settimeout(0.2)
me = s.getsockname()[1]
s.sendto((
    f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
    f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-ping{me}\r\n"
    "Max-Forwards: 70\r\nFrom: <sip:ping@127.0.0.1>;tag=ping\r\n"
    f"To: <sip:127.0.0.1:{port}>\r\nCall-ID: ping{me}\r\nCSeq: 1 OPTIONS\r\n"
    "Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
data = s.recv(4096)
sys.exit(0 if data.startswith(b"SIP/2.0 200") else 1)
PY
        sleep 0.1
    done
    die "Kamailio did not start"
}
stop_kamailio() {
    kill -TERM "$kam_pid"
    wait "$kam_pid" || true
    kam_pid=""
}

# Runs a SIPp scenario against Kamailio; the log lines go to $work/$name.out.
# sipp_run NAME SCENARIO CSV CALLS [more sipp options]
sipp_run() {
    local name=$1 sf=$2 csv=$3 calls=$4
    shift 4
    rm -f "$work/$name.out"
    (cd "$work" && sipp "127.0.0.1:$sip_port" -i 127.0.0.1 -sf "$repo/examples/kamailio/sipp/$sf" \
        -inf "$csv" -m "$calls" -r 200 -rp 1000 -l 50 -recv_timeout 5000 -timeout 120 \
        -nostdin -trace_logs -log_file "$work/$name.out" "$@" >/dev/null 2>&1) || true
    touch "$work/$name.out"
}

# Compares REGISTER results with the agent's lists.
# verify_register OUT MODE   (MODE: live, outage-cached, outage)
verify_register() {
    python3 - "$work/all.json" "$work/unlicensed.json" "$work/$1.out" "$2" <<'PY'
import json, sys
sys.path.insert(0, "examples/python")
from licagent_client import Licagent
all_users, unlicensed, out, mode = sys.argv[1:5]
users = json.load(open(all_users))
unlic = {u["extension"]: u for u in json.load(open(unlicensed))}
got = {}
for line in open(out):
    parts = line.rstrip("\n").split(" ", 2)
    if len(parts) == 3:
        got[parts[0]] = (parts[1], parts[2])
expected = {}
for u in users:
    ext = u["extension"]
    if mode == "outage" or (mode == "outage-cached" and ext in unlic):
        expected[ext] = ("503", "License Service Unavailable|30")
    elif ext in unlic:
        expected[ext] = ("403", "License missing: " + ",".join(Licagent.denial(unlic[ext])) + "|")
    else:
        expected[ext] = ("200", "OK|")
for ext in range(9000, 9010):
    expected[str(ext)] = ("503", "License Service Unavailable|30") if mode.startswith("outage") else ("404", "Not Found|")
bad = [(e, expected[e], got.get(e)) for e in sorted(expected) if got.get(e) != expected[e]]
for e, want, have in bad[:10]:
    print(f"  {e}: expected {want}, got {have}", file=sys.stderr)
counts = {}
for code, _ in expected.values():
    counts[code] = counts.get(code, 0) + 1
print(" ".join(f"{n}x{c}" for c, n in sorted(counts.items())))
sys.exit(1 if bad else 0)
PY
}

step "Kamailio on 127.0.0.1:$sip_port (user kamailio), licensed check per REGISTER"
start_kamailio
licensed_n=$(python3 -c 'import json,sys; print(sum(1 for u in json.load(open(sys.argv[1])) if u["licensed"]))' "$work/all.json")
unlicensed_n=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/unlicensed.json")
echo "agent: $licensed_n licensed, $unlicensed_n unlicensed (users list --unlicensed --json)"
[ "$licensed_n" -gt 0 ] && [ "$unlicensed_n" -gt 0 ] || fail "the user mix has both licensed and unlicensed users"

kam_user() { [ "$(ps -o user= -p "$kam_pid")" = kamailio ]; }
check "Kamailio runs as user kamailio" kam_user
# Every UDP socket of a kamailio process is on 127.0.0.1 (and one exists).
kam_loopback_only() {
    local socks
    socks=$(ss -Hulnp | grep '"kamailio"' | awk '{ print $4 }')
    [ -n "$socks" ] && ! grep -qv '^127\.0\.0\.1:' <<<"$socks"
}
check "Kamailio listens on 127.0.0.1 only" kam_loopback_only

step "SIPp: REGISTER the 200 users and 10 unknown extensions"
sipp_run reg1 register.xml "$work/register.csv" 210
if summary=$(verify_register reg1 live); then
    ok "REGISTER: 200 OK for licensed, 403 License missing for unlicensed, 404 for unknown ($summary)"
else
    fail "REGISTER replies do not match users list --unlicensed --json"
fi
check "a user without a profile gets 403 License missing: no_profile" \
    grep -qx "2180 403 License missing: no_profile|" "$work/reg1.out"

step "Python client: the same verdicts"
lic_ext=$(python3 -c 'import json,sys; print(next(u["extension"] for u in json.load(open(sys.argv[1])) if u["licensed"]))' "$work/all.json")
unlic_ext=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["extension"])' "$work/unlicensed.json")
client_exit() { # expected-exit, args...
    local want=$1 rc=0
    shift
    client "$@" >/dev/null 2>&1 || rc=$?
    [ "$rc" = "$want" ]
}
check "client: licensed $lic_ext exits 0" client_exit 0 entitlement "$lic_ext"
check "client: unlicensed $unlic_ext exits 1" client_exit 1 entitlement "$unlic_ext"
check "client: unknown 9000 exits 2" client_exit 2 entitlement 9000
check "client: users --unlicensed lists as many as the CLI" \
    test "$(client users --unlicensed | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" = "$unlicensed_n"

step "SIPp: INVITEs (caller checked; emergency numbers never blocked)"
{
    echo SEQUENTIAL
    echo "$lic_ext;2999;"    # licensed caller, callee not registered: 480
    echo "$unlic_ext;$lic_ext;" # unlicensed caller: 403
    echo "9001;$lic_ext;"    # unknown caller: 404
    echo "$unlic_ext;112;"   # emergency: no check, no gateway here: 480
    echo "2185;911;"         # no profile, emergency: 480
} >"$work/invite.csv"
sipp_run inv1 invite.xml "$work/invite.csv" 5
unlic_text=$(grep "^$unlic_ext 403 " "$work/reg1.out" | cut -d' ' -f3- || true)
check "INVITE from a licensed user to an unregistered callee: 480" \
    grep -qx "$lic_ext 2999 480 Temporarily Unavailable|" "$work/inv1.out"
check "INVITE from an unlicensed user: the same 403 as its REGISTER" \
    grep -qxF "$unlic_ext $lic_ext 403 $unlic_text" "$work/inv1.out"
check "INVITE from an unknown extension: 404" grep -qx "9001 $lic_ext 404 Not Found|" "$work/inv1.out"
check "INVITE to 112 from an unlicensed user is not blocked (480: no emergency gateway here)" \
    grep -qx "$unlic_ext 112 480 Temporarily Unavailable|" "$work/inv1.out"
check "INVITE to 911 from a user without a profile is not blocked" \
    grep -qx "2185 911 480 Temporarily Unavailable|" "$work/inv1.out"

step "agent restarted under a running Kamailio: its kept connections are dead, the next REGISTERs reconnect"
# Unknown extensions first: the first request of each worker goes out on a
# connection the old agent process took with it. Without the reconnect, it
# would get 503 instead of 404.
stop_agent
start_agent
{
    echo SEQUENTIAL
    for ext in $(seq 9000 9009) $(seq 2000 2199); do echo "$ext;"; done
} >"$work/register-unknown-first.csv"
sipp_run restart register.xml "$work/register-unknown-first.csv" 210
if summary=$(verify_register restart live); then
    ok "after an agent restart: same replies, no 503 ($summary)"
else
    fail "after an agent restart: REGISTERs on the old connections failed"
fi

step "portal: premium 20 -> 25, business 40 -> 35; licagent refresh; REGISTER again"
portal pbx edit "$serial" --seats premium=25,business=35,essential=80 >/dev/null
agent refresh >/dev/null
cp "$work/all.json" "$work/all-before.json"
cp "$work/unlicensed.json" "$work/unlicensed-before.json"
agent users list --json >"$work/all.json"
agent users list --unlicensed --json >"$work/unlicensed.json"
sipp_run reg2 register.xml "$work/register.csv" 210
if summary=$(verify_register reg2 live); then
    ok "after the seat change: REGISTER replies match the new users list --unlicensed --json ($summary)"
else
    fail "after the seat change: REGISTER replies do not match the new lists"
fi
gained=$(comm -13 <(grep -o '^[0-9]* 200' "$work/reg1.out" | sort) <(grep -o '^[0-9]* 200' "$work/reg2.out" | sort) | wc -l)
lost=$(comm -13 <(grep -o '^[0-9]* 403' "$work/reg1.out" | sort) <(grep -o '^[0-9]* 403' "$work/reg2.out" | sort) | wc -l)
check "5 users went from 403 to 200 (premium seats added)" test "$gained" -eq 5
check "5 users went from 200 to 403 (business seats taken away)" test "$lost" -eq 5

step "agent frozen (SIGSTOP: it accepts but never answers): 503 after a short timeout"
# Each worker waits 0.5 s once, then answers 503 at once for a pause that
# grows while the agent stays silent: without that pause, 210 REGISTERs
# and their retransmissions would hold every worker for minutes and SIPp
# would see no answer.
kill -STOP "$agent_pid"
sipp_run frozen register.xml "$work/register.csv" 210
kill -CONT "$agent_pid"
if summary=$(verify_register frozen outage-cached); then
    ok "agent frozen: 503 + Retry-After for users without a fresh verdict, 200 for the others ($summary)"
else
    fail "agent frozen: REGISTERs did not get 503 (or 200 from the last verdict) in time"
fi

step "agent stopped: 503 with Retry-After (users licensed at their last check go on)"
stop_agent
check "client: agent stopped exits 3" client_exit 3 entitlement "$lic_ext"
sipp_run reg3 register.xml "$work/register.csv" 210
if summary=$(verify_register reg3 outage-cached); then
    ok "agent stopped: 200 for users licensed at their last check, 503 + Retry-After: 30 for the rest ($summary)"
else
    fail "agent stopped: replies with the cached verdicts are wrong"
fi
step "Kamailio restarted while the agent is stopped: nothing cached, every REGISTER 503"
stop_kamailio
start_kamailio
sipp_run reg4 register.xml "$work/register.csv" 210
if summary=$(verify_register reg4 outage); then
    ok "agent stopped, cold Kamailio: every REGISTER 503 with Retry-After: 30 ($summary)"
else
    fail "agent stopped, cold Kamailio: not every REGISTER got 503 + Retry-After"
fi
sipp_run inv2 invite.xml "$work/invite.csv" 5
check "agent stopped: INVITE 503 with Retry-After" \
    grep -qx "$lic_ext 2999 503 License Service Unavailable|30" "$work/inv2.out"
check "agent stopped: emergency INVITE still not blocked" \
    grep -qx "$unlic_ext 112 480 Temporarily Unavailable|" "$work/inv2.out"

step "agent started again: 200 again"
start_agent
sipp_run reg5 register.xml "$work/register.csv" 210
if summary=$(verify_register reg5 live); then
    ok "agent back: REGISTER replies match users list again ($summary)"
else
    fail "agent back: REGISTER replies do not match users list"
fi

step "Kamailio's log: no Lua errors"
check "no error from app_lua or the helper in Kamailio's log" \
    sh -c '! grep -E "app_lua|licagent.lua|lua_run" "$1" | grep -qE "ERROR|CRITICAL"' sh "$work/kamailio.log"

step "REGISTER/s with and without the license check (SIPp, same machine, alternating)"
# Licensed users only, so that both runs do the same SIP work (a 200 with
# a usrloc write); the difference is the question to the agent.
{
    echo SEQUENTIAL
    python3 -c 'import json, sys
for u in json.load(open(sys.argv[1])):
    if u["licensed"]:
        print(u["extension"] + ";")' "$work/all.json"
} >"$work/bench.csv"
bench_calls=${KAMAILIO_BENCH_REGISTERS:-20000}
bench_rounds=${KAMAILIO_BENCH_ROUNDS:-3}
# Prints the REGISTER/s of one SIPp run as fast as Kamailio answers: SIPp's
# own cumulative call rate (a call is one REGISTER and its 200).
rate() { # label
    local rc=0 cps
    (cd "$work" && sipp "127.0.0.1:$sip_port" -i 127.0.0.1 -sf "$repo/examples/kamailio/sipp/register.xml" \
        -inf "$work/bench.csv" -m "$bench_calls" -r 100000 -rp 1000 -l 200 -recv_timeout 5000 -timeout 300 \
        -nostdin >"$work/bench-screen.txt" 2>&1) || rc=$?
    # SIPp exits 0 when every REGISTER got one of the replies it expects.
    if [ "$rc" != 0 ]; then
        fail "bench $1: SIPp exited $rc (some REGISTERs got no reply)"
        return 0
    fi
    cps=$(awk -F'|' '/Call Rate/ { v = $3 } END { sub(/cps.*/, "", v); gsub(/ /, "", v); print v }' \
        "$work/bench-screen.txt")
    printf 'bench: %-8s %d REGISTERs: %.0f REGISTER/s\n' "$1" "$bench_calls" "${cps:-0}" | tee -a "$work/bench.out"
}
stop_kamailio
for round in $(seq "$bench_rounds"); do
    start_kamailio
    rate "check"
    stop_kamailio
    start_kamailio -A LICAGENT_SKIP
    rate "no-check"
    stop_kamailio
done
# The median of each, over the rounds.
for mode in check no-check; do
    awk -v m="$mode" '$2 == m { print $(NF - 1) }' "$work/bench.out" 2>/dev/null | sort -n |
        awk -v m="$mode" -v agent="$agent_bin" \
            '{ v[NR] = $1 } END { if (NR) printf "bench: median %-8s %.0f REGISTER/s over %d runs (agent %s)\n", m, v[int((NR + 1) / 2)], NR, agent }'
done

echo "kamailio: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
