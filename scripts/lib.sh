# Shared by the scripts: install what is missing, print steps.
# Sourced, not run.

step() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages that are not installed yet.
ensure_debs() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        step "apt-get install ${missing[*]}"
        as_root apt-get update -qq
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi
}

ensure_rust_components() {
    for c in "$@"; do
        rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
    done
}

ensure_rust_targets() {
    for t in "$@"; do
        rustup target list --installed | grep -qx "$t" || rustup target add "$t"
    done
}

# Like ensure_debs, but no service starts during the install: Debian's
# kamailio and nginx packages start theirs with stock configs that listen on
# every interface. A policy-rc.d that exits 101 tells invoke-rc.d to start
# nothing; an existing one is put back afterwards. A script that may exit
# during the install calls restore_policy_rc from its EXIT trap too.
_prc_saved=""
_prc_ours=0
restore_policy_rc() {
    if [ "$_prc_ours" = 1 ]; then
        if [ -n "$_prc_saved" ]; then
            as_root mv -f "$_prc_saved" /usr/sbin/policy-rc.d
        else
            as_root rm -f /usr/sbin/policy-rc.d
        fi
        _prc_ours=0
        _prc_saved=""
    fi
}
ensure_debs_no_start() {
    local missing=() p policy
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ "${#missing[@]}" -gt 0 ] || return 0
    step "apt-get install ${missing[*]} (services kept from starting)"
    if [ -e /usr/sbin/policy-rc.d ]; then
        _prc_saved=$(mktemp)
        as_root cp -p /usr/sbin/policy-rc.d "$_prc_saved"
    fi
    _prc_ours=1
    policy=$(mktemp)
    printf '#!/bin/sh\n# %s: start no service during this install\nexit 101\n' "$(basename "$0")" >"$policy"
    as_root install -m 0755 "$policy" /usr/sbin/policy-rc.d
    rm -f "$policy"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    restore_policy_rc
}
