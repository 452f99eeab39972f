#!/usr/bin/env bash
# Builds the fully static release binary (x86_64-unknown-linux-musl) and checks it:
#   - `file` says it is statically linked and `ldd` finds nothing to load;
#   - it is at most MAX_BYTES (2,000,000 bytes) big;
#   - `--version` names the crate version and the musl target.
# Installs nothing. Needs `musl-gcc` (Debian: musl-tools; ring's C code is compiled with it) and the
# Rust target; scripts/test.sh installs both. Honours CARGO_TARGET_DIR.
# Prints the binary's path on the last line of stdout (`binary: PATH`).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly TARGET=x86_64-unknown-linux-musl
readonly MAX_BYTES=2000000

fail() {
    echo "build-static: $*" >&2
    exit 1
}

if ! command -v musl-gcc >/dev/null 2>&1; then
    fail "musl-gcc not found. Run scripts/test.sh (installs it) or: apt-get install -y musl-tools"
fi
if [[ ! -d "$(rustc --print sysroot)/lib/rustlib/$TARGET/lib" ]]; then
    fail "the Rust target $TARGET is not installed. Run scripts/test.sh (adds it) or: rustup target add $TARGET"
fi

echo "==== cargo build --release --target $TARGET"
cargo build --release --target "$TARGET"

bin="${CARGO_TARGET_DIR:-target}/$TARGET/release/etcd-await-election"
[[ -x "$bin" ]] || fail "cargo succeeded but $bin does not exist"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

errors=0
check() { # check OK|FAIL message
    echo "$1: $2"
    [[ "$1" == OK ]] || errors=$((errors + 1))
}

size="$(stat -c %s "$bin")"
mb="$(awk -v b="$size" 'BEGIN { printf "%.2f MB, %.2f MiB", b / 1e6, b / 1048576 }')"
echo "binary: $bin"
echo "size:   $size bytes ($mb)"
if ((size <= MAX_BYTES)); then
    check OK "size $size <= $MAX_BYTES bytes"
else
    check FAIL "size $size > $MAX_BYTES bytes"
fi

file_out="$(file -b "$bin")"
echo "file:   $file_out"
if [[ "$file_out" == *"static-pie linked"* || "$file_out" == *"statically linked"* ]]; then
    check OK "file says statically linked"
else
    check FAIL "file does not say statically linked"
fi

# glibc's ldd prints "statically linked" (static-pie) or "not a dynamic executable" (static) for a
# binary without an interpreter; anything with "=>" or a library path is a dependency.
ldd_out="$(ldd "$bin" 2>&1 || true)"
echo "ldd:    $(echo "$ldd_out" | sed 's/^[[:space:]]*//' | paste -sd ' ')"
if grep -Eq '^[[:space:]]*(statically linked|not a dynamic executable)[[:space:]]*$' <<<"$ldd_out" &&
    ! grep -q '=>\|/lib' <<<"$ldd_out"; then
    check OK "ldd finds nothing to load"
else
    check FAIL "ldd lists dependencies"
fi

version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | sed -n 1p)"
version_out="$("$bin" --version 2>&1 || true)"
echo "--version: $version_out"
if [[ "$version_out" == *"$version"* && "$version_out" == *"$TARGET"* ]]; then
    check OK "--version names $version and $TARGET"
else
    check FAIL "--version should name $version and $TARGET"
fi

if ((errors)); then
    fail "$errors check(s) failed for $bin"
fi
echo "binary: $bin"
