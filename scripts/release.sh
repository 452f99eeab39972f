#!/usr/bin/env bash
# Builds the release assets: fully static (musl) binaries for x86_64 and aarch64 and their checksums,
# in target/release-assets/ (under CARGO_TARGET_DIR when set):
#   etcd-await-election-linux-amd64   x86_64-unknown-linux-musl
#   etcd-await-election-linux-arm64   aarch64-unknown-linux-musl
#   SHA256SUMS                        `sha256sum -c SHA256SUMS` in that directory verifies both
# Debian 12, as root, no stdin: installs what is missing (musl-tools for x86_64's C code, Debian's
# aarch64 cross compiler for aarch64's C code and link, the two Rust targets) and does nothing when
# everything is there. The binaries are checked by scripts/ship-checks.sh, not here.
# Prints the assets directory on the last line of stdout (`assets: DIR`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export DEBIAN_FRONTEND=noninteractive

# asset suffix (Go/OCI architecture name) -> Rust target
readonly -A TARGETS=([amd64]=x86_64-unknown-linux-musl [arm64]=aarch64-unknown-linux-musl)
readonly NAME=etcd-await-election

# musl-tools: musl-gcc compiles ring's C and assembly for x86_64-unknown-linux-musl (cc-rs picks it
# up by name). gcc-aarch64-linux-gnu: ring's C for aarch64 and the link; the Rust musl targets bring
# their own crt objects and libc.a ("self-contained"), so a glibc cross gcc links them fine.
# libc6-dev-arm64-cross: the headers ring's C includes (<stdint.h>, <string.h>: types and
# declarations only, the same on aarch64 musl); only a Recommends of the cross gcc, which
# ensure_packages does not install.
ensure_packages musl-tools gcc-aarch64-linux-gnu libc6-dev-arm64-cross
installed_targets="$(rustup target list --installed)"
for target in "${TARGETS[@]}"; do
    if ! grep -qx "$target" <<<"$installed_targets"; then
        rustup target add "$target"
    fi
done

export CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
export AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc

target_args=()
for target in "${TARGETS[@]}"; do target_args+=(--target "$target"); done
echo "==== cargo build --locked --release ${target_args[*]}"
# One cargo run for both targets: it schedules both builds on all cores at once.
cargo build --locked --release "${target_args[@]}"

target_dir="${CARGO_TARGET_DIR:-target}"
assets="$target_dir/release-assets"
rm -rf "$assets"
mkdir -p "$assets"
for arch in amd64 arm64; do
    bin="$target_dir/${TARGETS[$arch]}/release/$NAME"
    [[ -x "$bin" ]] || {
        echo "release: cargo succeeded but $bin does not exist" >&2
        exit 1
    }
    install -m 0755 "$bin" "$assets/$NAME-linux-$arch"
done
(cd "$assets" && sha256sum "$NAME-linux-amd64" "$NAME-linux-arm64" >SHA256SUMS)

echo "==== release assets"
for arch in amd64 arm64; do
    printf '%-36s %9d bytes\n' "$NAME-linux-$arch" "$(stat -c %s "$assets/$NAME-linux-$arch")"
done
sed 's/^/SHA256SUMS: /' "$assets/SHA256SUMS"
echo "assets: $(cd "$assets" && pwd)"
