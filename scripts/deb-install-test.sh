#!/usr/bin/env bash
# Installs the amd64 package on this machine with dpkg and checks that every
# file lands where the units expect it, that the maintainer scripts make the
# accounts and enable the units, that the packaged daemon starts as its user
# on the packaged config, and that remove and purge clean up what they
# should. Needs root (CI runs as root); prints why and passes otherwise.
#
#   scripts/deb-install-test.sh path/to/licagent_VERSION_amd64.deb
#
# With CI set, the accounts left by an earlier run are deleted first, so
# that the test proves the maintainer script creates them, and a second
# round installs without systemd-sysusers to test the adduser fallback.
set -euo pipefail
cd "$(dirname "$0")/.."

deb="${1:?usage: scripts/deb-install-test.sh PACKAGE.deb}"
if [ "$(id -u)" -ne 0 ]; then
    echo "deb-install-test: SKIPPED: dpkg -i needs root (CI runs as root)"
    exit 0
fi
command -v dpkg >/dev/null || {
    echo "deb-install-test: dpkg is missing; this test needs a Debian system" >&2
    exit 1
}
if dpkg-query -W -f='${Status}' licagent 2>/dev/null | grep -q "ok installed"; then
    echo "deb-install-test: a licagent package is already installed here; remove it first (dpkg --purge licagent)" >&2
    exit 1
fi

passed=0
failed=0
check() {
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then
        echo "deb: ok: $what"
        passed=$((passed + 1))
    else
        echo "deb: FAILED: $what" >&2
        failed=$((failed + 1))
    fi
}
# Whatever happens, leave the machine without the package and the daemon.
daemon_pid=""
fake_path=""
cleanup() {
    if [ -n "$daemon_pid" ]; then kill -9 "$daemon_pid" 2>/dev/null || true; fi
    dpkg --purge licagent >/dev/null 2>&1 || true
    if [ -n "$fake_path" ]; then rm -rf "$fake_path"; fi
}
trap cleanup EXIT

delete_accounts() {
    if getent passwd licagent >/dev/null; then userdel licagent; fi
    # userdel may have removed the user's own group already.
    if getent group licagent >/dev/null; then groupdel licagent; fi
    if getent group licadmin >/dev/null; then groupdel licadmin; fi
}

unit=/usr/lib/systemd/system/licagent.service
conf=/etc/licagent/licagent.toml
version=$(dpkg-deb -f "$deb" Version)

# The first word of ExecStart= in the installed unit.
exec_start_bin() { sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit"; }
# The file after --config in ExecStart=.
exec_start_config() { sed -n 's/^ExecStart=.*--config \([^ ]*\).*/\1/p' "$unit"; }
owner_mode() { [ "$(stat -c '%U:%G %a' "$1")" = "$2" ]; }
is_conffile() { dpkg-query -W -f='${Conffiles}\n' licagent | grep -q "^ $conf "; }
system_user() {
    local uid
    uid=$(id -u licagent) && [ "$uid" -lt 1000 ] && [ "$(id -gn licagent)" = licagent ]
}
same_file() { cmp -s "$1" "$2"; }
# A gzipped man page with a title line and the text $2 in it.
man_page() { zcat "$1" | grep -q '^\.TH ' && zcat "$1" | grep -q "$2"; }
# Runs the packaged bash completion for "licagent $1<TAB>" and looks for $2.
bash_completes() {
    # shellcheck disable=SC2016
    bash -c '
        source /usr/share/bash-completion/completions/licagent
        read -r -a COMP_WORDS <<<"licagent $1"
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        COMP_LINE="licagent $1"
        COMP_POINT=${#COMP_LINE}
        _licagent licagent "${COMP_WORDS[$COMP_CWORD]}" "${COMP_WORDS[$COMP_CWORD - 1]}"
        printf "%s\n" "${COMPREPLY[@]}"
    ' sh "$1" | grep -qx "$2"
}
wanted_by() { [ "$(readlink -f "/etc/systemd/system/$1/$2")" = "/usr/lib/systemd/system/$2" ]; }
status_is() { [ "$(dpkg-query -W -f='${Status}' licagent 2>/dev/null)" = "$1" ]; }

# What every install must have put in place.
check_installed() {
    check "package installed" status_is "install ok installed"
    check "/usr/bin/licagent runs and is version ${version%-*}" \
        sh -c '/usr/bin/licagent --version | grep -qx "licagent $1"' sh "${version%-*}"
    check "service unit in /usr/lib/systemd/system" test -f "$unit"
    check "socket unit in /usr/lib/systemd/system" test -f /usr/lib/systemd/system/licagent.socket
    check "ExecStart= is /usr/bin/licagent" test "$(exec_start_bin)" = /usr/bin/licagent
    check "ExecStart= --config is $conf" test "$(exec_start_config)" = "$conf"
    check "sysusers.d/licagent.conf is systemd/licagent.sysusers" \
        same_file /usr/lib/sysusers.d/licagent.conf systemd/licagent.sysusers
    check "tmpfiles.d/licagent.conf is systemd/licagent.tmpfiles" \
        same_file /usr/lib/tmpfiles.d/licagent.conf systemd/licagent.tmpfiles
    check "operations.md where the unit's Documentation= points" \
        test -f /usr/share/doc/licagent/operations.md
    check "licagent(8) in /usr/share/man/man8" man_page /usr/share/man/man8/licagent.8.gz "LICAGENT"
    check "licagent-users(8) in /usr/share/man/man8" man_page /usr/share/man/man8/licagent-users.8.gz "users"
    check "licagent.toml(5) in /usr/share/man/man5, with the config keys" \
        man_page /usr/share/man/man5/licagent.toml.5.gz "paths.state_dir"
    check "bash completion completes 'licagent sta' to status" bash_completes sta status
    check "bash completion completes 'licagent users im' to import" bash_completes "users im" import
    check "zsh completion in vendor-completions" grep -q "#compdef licagent" /usr/share/zsh/vendor-completions/_licagent
    check "fish completion in vendor_completions.d" grep -q "complete -c licagent" /usr/share/fish/vendor_completions.d/licagent.fish
    check "$conf is a conffile" is_conffile
    check "$conf is root:licagent 0640" owner_mode "$conf" "root:licagent 640"
    check "system user licagent in group licagent" system_user
    check "group licadmin exists" getent group licadmin
    check "licagent.service enabled" wanted_by multi-user.target.wants licagent.service
    check "licagent.socket enabled" wanted_by sockets.target.wants licagent.socket
}

# Starts the packaged daemon as systemd would: user licagent, the packaged
# config, /var/lib/licagent and /run/licagent made as StateDirectory= and
# RuntimeDirectory= make them. Then asks it for its status as root.
check_daemon_runs() {
    install -d -o licagent -g licagent -m 0700 /var/lib/licagent
    install -d -o licagent -g licagent -m 0755 /run/licagent
    setpriv --reuid licagent --regid licagent --init-groups \
        /usr/bin/licagent --config "$conf" run 2>/tmp/licagent-deb-test.log &
    daemon_pid=$!
    local state=""
    for _ in $(seq 1 100); do
        # The exit code is the state's (11: unlicensed), and a failure is
        # JSON too ({"error": ...}): an answer is JSON with a state.
        state=$(/usr/bin/licagent --config "$conf" status --json 2>/dev/null || true)
        case "$state" in *'"state"'*) break ;; esac
        state=""
        sleep 0.1
    done
    check "packaged daemon, as licagent, answers on /run/licagent/api.sock" test -n "$state"
    check "its store is /var/lib/licagent/licagent.db, owned by licagent" \
        owner_mode /var/lib/licagent/licagent.db "licagent:licagent 600"
    kill -TERM "$daemon_pid"
    check "it stops on SIGTERM" wait "$daemon_pid"
    daemon_pid=""
    if [ -z "$state" ]; then
        echo "--- daemon log" >&2
        cat /tmp/licagent-deb-test.log >&2 || true
    fi
    rm -f /tmp/licagent-deb-test.log
}

check_removed_then_purged() {
    dpkg -r licagent >/dev/null
    check "remove: binary gone" test ! -e /usr/bin/licagent
    check "remove: units gone" test ! -e "$unit"
    check "remove: conffile kept" test -f "$conf"
    check "remove: state kept" test -f /var/lib/licagent/licagent.db
    check "remove: package left as config-files" status_is "deinstall ok config-files"
    dpkg --purge licagent >/dev/null
    check "purge: package gone" sh -c '! dpkg-query -W licagent'
    check "purge: /etc/licagent gone" test ! -e /etc/licagent
    check "purge: /var/lib/licagent gone" test ! -e /var/lib/licagent
    check "purge: /run/licagent gone" test ! -e /run/licagent
    check "purge: stat override gone" sh -c "! dpkg-statoverride --list $conf"
    check "purge: unit symlinks gone" test ! -e /etc/systemd/system/multi-user.target.wants/licagent.service
    check "purge: user licagent kept (Debian policy)" getent passwd licagent
}

if [ -n "${CI:-}" ]; then
    delete_accounts
elif getent passwd licagent >/dev/null; then
    echo "deb-install-test: note: user licagent existed before; its creation is not proven (set CI=1 to delete it first)"
fi

echo "deb-install-test: round 1: dpkg -i $deb (accounts by systemd-sysusers)"
dpkg -i "$deb" >/dev/null
check_installed
check_daemon_runs
check_removed_then_purged

if [ -n "${CI:-}" ]; then
    echo "deb-install-test: round 2: dpkg -i without systemd-sysusers on PATH (accounts by adduser)"
    delete_accounts
    # A PATH holding every command of this system except systemd-sysusers.
    fake_path=$(mktemp -d)
    for f in /usr/sbin/* /usr/bin/*; do
        [ "${f##*/}" = systemd-sysusers ] || ln -sf "$f" "$fake_path/"
    done
    PATH="$fake_path" dpkg -i "$deb" >/dev/null
    check "adduser: package installed" status_is "install ok installed"
    check "adduser: system user licagent in group licagent" system_user
    check "adduser: group licadmin exists" getent group licadmin
    check "adduser: $conf is root:licagent 0640" owner_mode "$conf" "root:licagent 640"
    dpkg --purge licagent >/dev/null
    check "adduser: purged" sh -c '! dpkg-query -W licagent'
else
    echo "deb-install-test: round 2 (adduser fallback) runs with CI set only: it deletes accounts"
fi

echo "deb-install-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
