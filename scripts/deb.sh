#!/usr/bin/env bash
# Builds the Debian packages of licagent from the appliance binaries.
#
#   scripts/deb.sh [TARGET...]
#
# TARGETs default to all three; each gives one package:
#   x86_64-unknown-linux-gnu       -> licagent_VERSION-1_amd64.deb
#   aarch64-unknown-linux-gnu      -> licagent_VERSION-1_arm64.deb
#   armv7-unknown-linux-gnueabihf  -> licagent_VERSION-1_armhf.deb
# written to $CARGO_TARGET_DIR/debian/. The package's contents and
# maintainer scripts come from [package.metadata.deb] in Cargo.toml and
# packaging/debian/. Installs cargo-deb (a pinned version) if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# Pinned: its maintainer-script snippets and unit paths are part of what the
# package test checks.
CARGO_DEB_VERSION=3.6.0

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
out="$CARGO_TARGET_DIR/debian"
mkdir -p "$out"

if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
    step "cargo install cargo-deb $CARGO_DEB_VERSION"
    # Its own target dir: cargo-deb's release build shares nothing with ours.
    cargo install --locked cargo-deb --version "$CARGO_DEB_VERSION" \
        --target-dir "$CARGO_TARGET_DIR/cargo-deb-build"
fi
# cargo-deb strips with the target's strip; dpkg-deb packs.
ensure_debs dpkg-dev binutils

# Man pages and shell completions, generated once (on the host) from the CLI
# definition and docs/config.md by tools/gen; the same files go into every
# architecture's package. packaging/generated is not tracked.
step "man pages and completions (tools/gen)"
rm -rf packaging/generated
cargo run --locked --quiet -p licagent-gen -- packaging/generated
gzip -9n packaging/generated/man/*

for target in "${targets[@]}"; do
    case "$target" in
    aarch64-unknown-linux-gnu) arch=arm64 && ensure_debs binutils-aarch64-linux-gnu ;;
    armv7-unknown-linux-gnueabihf) arch=armhf && ensure_debs binutils-arm-linux-gnueabihf ;;
    x86_64-unknown-linux-gnu) arch=amd64 ;;
    *)
        echo "deb.sh: no package for target $target" >&2
        exit 2
        ;;
    esac
    # Builds (installing the cross toolchain if needed) and prints the size.
    bash scripts/cross.sh "$target" --build-only
    step "cargo deb --target $target"
    # One package per architecture in the folder, so that scripts and people
    # never pick up one left from an older version.
    rm -f "$out"/licagent_*_"$arch".deb
    cargo deb --no-build --profile appliance --target "$target" --output "$out"
done
ls -l "$out"/*.deb
