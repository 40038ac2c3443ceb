#!/usr/bin/env bash
# The Activation / Licenses page (docs/ui.md) in a real browser: Debian's
# Chromium, driven through ChromeDriver over the W3C WebDriver protocol by
# scripts/ui_browser.py (Python standard library only), against the real
# licportal (HTTPS on 127.0.0.1), the real daemon and `licagent ui`.
#
#   scripts/ui-test.sh
#
# What it checks (each a line "ui: ok: ..." or "ui: FAILED: ..."):
#   - licagent ui asks for its one-time login code; a wrong one is refused;
#     the session cookie is HttpOnly;
#   - the page's key check is the CLI's; a typo shows the typo message and
#     sends nothing (no request from the browser, nothing at the portal);
#   - a key pasted with non-breaking spaces and an en dash activates: the
#     page shows Active, the seats (bought, used, over) and the users who
#     miss a license; the field is cleared and only the redacted key shows;
#   - a seat change on the portal + `licagent refresh` from the shell shows
#     on the page by itself, without a reload;
#   - a viewer that may only read: nginx as user nobody (only in the
#     socket's group) proxies /licenses/ to the daemon's own /ui/ on the
#     socket, as docs/ui.md tells a PBX to do: the page says it is read-only,
#     every change control is disabled, and a forced POST is refused 403;
#   - test mode started on the admin's page shows on the viewer's page
#     without a reload (events through the proxy);
#   - deactivation is asked twice, and cancelling sends nothing.
#
# Needs root (CI runs as root; it prints why and passes otherwise): it
# installs chromium, chromium-driver, nginx (kept from starting as a
# service) and python3 with apt-get when missing, and runs nginx's workers
# as user nobody.
# Uses the debug binaries `cargo test` built (scripts/test.sh runs it first).
# Settings from the environment:
#   UI_SCREENSHOTS=dir   keep the PNG screenshots there (default: a new
#                        temporary folder); the path is printed at the end
#   LICAGENT_BIN_DIR=dir licagent and licportal from there, no build
#   UI_TEST_KEEP=1       keep the temporary folder (logs) at the end
# Ends with "ui: N passed, M failed" and exits non-zero on a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
repo=$PWD

if [ "$(id -u)" -ne 0 ]; then
    # The read-only viewer is nginx's workers as user nobody: another uid
    # than the daemon's, which needs root (CI runs as root).
    echo "ui-test: SKIPPED: the read-only viewer runs nginx as user nobody, which needs root (CI runs as root)"
    exit 0
fi

work=$(mktemp -d)
# nobody (nginx's workers) must reach the socket's folder.
chmod 0711 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    restore_policy_rc
    if [ "${UI_TEST_KEEP:-0}" = 1 ]; then
        echo "ui-test: kept $work (UI_TEST_KEEP=1)"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

# Debian's packages start their services on install: kept from starting
# (scripts/lib.sh, ensure_debs_no_start).
ensure_debs_no_start chromium chromium-driver nginx python3 util-linux

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
if [ -n "${LICAGENT_BIN_DIR:-}" ]; then
    bin=$LICAGENT_BIN_DIR
else
    step "cargo build --workspace --locked (debug; already built by cargo test)"
    cargo build --workspace --locked --quiet
    bin="$CARGO_TARGET_DIR/debug"
fi
shots=${UI_SCREENSHOTS:-$(mktemp -d -t licagent-ui-screenshots.XXXXXX)}
mkdir -p "$shots"

die() {
    echo "ui-test: $*" >&2
    for log in "$work"/*.log; do
        [ -s "$log" ] || continue
        echo "--- $log (last lines)" >&2
        tail -n 20 "$log" >&2
    done
    echo "ui: 0 passed, 1 failed"
    exit 1
}
# Waits until FILE is not empty.
await_file() {
    for _ in $(seq 200); do [ -s "$1" ] && return 0; sleep 0.1; done
    die "$2"
}
free_tcp_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

portal() { "$bin/licportal" --data "$work/portal" "$@"; }
agent() { "$bin/licagent" --config "$work/licagent.toml" "$@"; }

step "portal: init, a customer, a PBX (premium 5, essential 10, mobile 2), serve on 127.0.0.1"
init=$(portal init --names localhost,127.0.0.1 --json)
key_id=$(sed -n 's/.*"key_id": "\(.*\)".*/\1/p' <<<"$init")
pubkey=$(sed -n 's/.*"public_key": "\(.*\)".*/\1/p' <<<"$init")
portal customer add "UI Test" >/dev/null
pbx=$(portal pbx add --customer "UI Test" --name "UI Test PBX" --term yearly --enforcement soft \
    --seats premium=5,essential=10 --addons mobile=2 --json)
pbx_key=$(sed -n 's/.*"key": "\(.*\)".*/\1/p' <<<"$pbx")
serial=$(sed -n 's/.*"serial": "\(.*\)".*/\1/p' <<<"$pbx")
"$bin/licportal" --data "$work/portal" serve --listen 127.0.0.1:0 --addr-file "$work/portal.addr" \
    >/dev/null 2>"$work/portal.log" &
pids+=($!)
await_file "$work/portal.addr" "the portal did not start"

step "agent: run (root: an admin), socket group nogroup, a few users"
# The socket's group is nogroup: nginx's workers (nobody:nogroup) may
# connect and read, like a PBX's web server in the licagent group.
mkdir -m 0755 "$work/run"
cat >"$work/licagent.toml" <<CONF
version = 1
[paths]
state_dir = "$work/agent"
socket = "$work/run/api.sock"
[api]
socket_mode = "0660"
socket_group = "nogroup"
admin_group = ""
[hwid]
root = "/"
[trust]
keys = ["$key_id $pubkey"]
[portal]
url = "https://$(cat "$work/portal.addr")"
ca_file = "$work/portal/ca.pem"
CONF
"$bin/licagent" --config "$work/licagent.toml" run >/dev/null 2>"$work/agent.log" &
pids+=($!)
for _ in $(seq 100); do
    rc=0
    agent status --check >/dev/null 2>&1 || rc=$?
    case $rc in 0 | 1[0-3]) break ;; esac
    sleep 0.1
done
[ -S "$work/run/api.sock" ] || die "the agent did not start"

step "licagent ui on 127.0.0.1:0 (as root, the admin)"
"$bin/licagent" --config "$work/licagent.toml" ui --listen 127.0.0.1:0 --addr-file "$work/ui.addr" \
    >"$work/ui.out" 2>"$work/ui.log" &
pids+=($!)
await_file "$work/ui.addr" "licagent ui did not start"

step "nginx as nobody: /licenses/ -> the daemon's /ui/ on the socket (docs/ui.md)"
nginx_port=$(free_tcp_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<CONF
# The recipe of docs/ui.md, on 127.0.0.1 for the test.
user nobody nogroup;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body;
    proxy_temp_path $work/nginx/proxy;
    server {
        listen 127.0.0.1:$nginx_port;
        location /licenses/ {
            proxy_pass http://unix:$work/run/api.sock:/ui/;
            proxy_http_version 1.1;
            proxy_set_header Host \$http_host;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_read_timeout 1h;
        }
    }
}
CONF
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" -g 'daemon off;' 2>>"$work/nginx.log" &
pids+=($!)
for _ in $(seq 100); do
    python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $nginx_port), 0.2)" 2>/dev/null && break
    sleep 0.1
done

step "chromedriver on 127.0.0.1"
driver_port=$(free_tcp_port)
chromedriver --port="$driver_port" --allowed-ips=127.0.0.1 >"$work/chromedriver.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$driver_port/status', timeout=1)" 2>/dev/null && break
    sleep 0.1
done

# A few users: 7 premium (5 seats: 2 over), 3 essential, 3 with the mobile
# add-on (2 seats).
{
    echo "extension,number,name,profile,mobile"
    for i in $(seq 1 7); do echo "20$i,,Premium user $i,premium,$([ "$i" -le 3 ] && echo 1 || echo 0)"; done
    for i in $(seq 1 3); do echo "30$i,,Essential user $i,essential,0"; done
} >"$work/users.csv"

step "the browser test (scripts/ui_browser.py)"
rc=0
UI_DRIVER="http://127.0.0.1:$driver_port" \
UI_ADMIN_URL="http://$(cat "$work/ui.addr")" \
UI_VIEWER_URL="http://127.0.0.1:$nginx_port" \
UI_CODE_FILE="$work/ui.out" \
UI_SCREENSHOTS="$shots" \
UI_KEY="$pbx_key" \
UI_SERIAL="$serial" \
UI_AGENT="$bin/licagent --config $work/licagent.toml" \
UI_PORTAL="$bin/licportal --data $work/portal" \
UI_PORTAL_LOG="$work/portal.log" \
UI_AGENT_LOG="$work/agent.log" \
UI_USERS_CSV="$work/users.csv" \
UI_WORK="$work" \
    timeout 300 python3 scripts/ui_browser.py || rc=$?
if [ "$rc" -ne 0 ]; then
    for log in "$work"/*.log; do
        [ -s "$log" ] || continue
        echo "--- $log (last lines)" >&2
        tail -n 15 "$log" >&2
    done
fi
exit "$rc"
