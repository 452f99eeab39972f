#!/usr/bin/env bash
# Runs every check of the project: formatting, lints and all tests, the real-etcd tests included.
# Installs what it needs first (Debian 12, as root, no stdin), so it works on a fresh machine and in CI.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
step="setup"
step_started=$SECONDS
section() {
    printf '==== (%s took %d s; %d s in all)\n' "$step" "$((SECONDS - step_started))" "$SECONDS"
    step="$*"
    step_started=$SECONDS
    printf '\n==== %s ====\n' "$*"
}
trap 'echo "==== FAILED: ${step} ====" >&2' ERR

source scripts/lib.sh

section "Install test dependencies"
# etcd-server/etcd-client: /usr/bin/etcd and /usr/bin/etcdctl for the real-etcd tests;
# openssl: test certificates; procps: pgrep; musl-tools + busybox-static: static build checks;
# strace: holds the command's spawn open in tests/command.rs (a signal in that window).
ensure_packages etcd-server etcd-client openssl procps musl-tools busybox-static strace

if ! rustup component list --installed | grep -q '^rustfmt'; then rustup component add rustfmt; fi
if ! rustup component list --installed | grep -q '^clippy'; then rustup component add clippy; fi
if ! rustup target list --installed | grep -qx 'x86_64-unknown-linux-musl'; then
    # The static build checks below need it: failing to add it fails the run.
    rustup target add x86_64-unknown-linux-musl
fi
# Prometheus' own text-format parser checks /metrics in tests/status.rs.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore prometheus_client
fi
etcd --version | sed -n 1p  # sed reads everything: no SIGPIPE under pipefail
etcdctl version | sed -n 1p
cargo --version

# The tests' etcd members live in eae-test-* dirs under the temp dir: give this run its own, so
# the leak check below sees only this run's processes.
run_tmp="$(mktemp -d "${TMPDIR:-/tmp}/eae-run.XXXXXX")"
trap 'rm -rf "$run_tmp"' EXIT
export TMPDIR="$run_tmp"

section "cargo fmt --check"
cargo fmt --all -- --check

section "cargo clippy"
cargo clippy --all-targets -- -D warnings

section "cargo test"
cargo test --all-targets -- --test-threads=2

# static build checks (issue 6)
section "static build checks"
scripts/static-checks.sh

# What a release publishes: both static binaries, SHA256SUMS, the OCI image, the examples.
section "ship checks"
scripts/ship-checks.sh

# The benchmark must not rot: a quick smoke of every figure (targets are reported, not asserted).
section "benchmark smoke (scripts/bench.sh --quick)"
scripts/bench.sh --quick

# Fault injection: 5 candidates on one lock, a 3-member etcd, 60 s of kills and freezes; any
# overlap of two commands, command outliving its wrapper, or leaked lease fails the run.
section "chaos (scripts/chaos.sh 60)"
scripts/chaos.sh 60 --quiet

# A test etcd still running means the harness leaked one.
section "leak check"
if pgrep -af -- "$run_tmp/eae-(test-|chaos\.)"; then
    echo "etcd test processes were left behind" >&2
    exit 1
fi
echo "no test processes left behind"

section "all checks passed"
