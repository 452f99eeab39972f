#!/usr/bin/env bash
# Demo: two instances, alice and bob, queue on one lock of a throwaway etcd.
# alice leads first and runs her command; when it ends she resigns and bob leads and runs his.
# Exits 0 if both instances exited 0. Debian 12, as root (installs etcd if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive ETCDCTL_API=3

source scripts/lib.sh
ensure_packages etcd-server etcd-client

tmp="$(mktemp -d "${TMPDIR:-/tmp}/eae-demo.XXXXXX")"
etcd_pid="" alice="" bob=""
cleanup() {
    # Instances get SIGTERM (timeout passes it on) so they resign; etcd is simply killed.
    for pid in $alice $bob; do kill "$pid" 2>/dev/null || true; done
    if [[ -n "$etcd_pid" ]]; then
        kill -9 "$etcd_pid" 2>/dev/null || true
        wait "$etcd_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# A port nothing listens on, from the ephemeral range (etcd failing to bind is retried below).

echo "==== starting a throwaway etcd"
for attempt in 1 2 3; do
    client="$(free_port)" peer="$(free_port)"
    endpoint="http://127.0.0.1:$client"
    rm -rf "$tmp/data"
    etcd --name demo --data-dir "$tmp/data" \
        --listen-client-urls "$endpoint" --advertise-client-urls "$endpoint" \
        --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
        --initial-cluster "demo=http://127.0.0.1:$peer" --initial-cluster-state new \
        --logger zap --log-outputs stderr --log-level error >"$tmp/etcd.log" 2>&1 &
    etcd_pid=$!
    for _ in $(seq 100); do
        if etcdctl --endpoints "$endpoint" --dial-timeout 1s endpoint health >/dev/null 2>&1; then break 2; fi
        kill -0 "$etcd_pid" 2>/dev/null || break
        sleep 0.2
    done
    echo "etcd attempt $attempt failed:" >&2
    tail -5 "$tmp/etcd.log" >&2
    kill -9 "$etcd_pid" 2>/dev/null || true
    wait "$etcd_pid" 2>/dev/null || true
    etcd_pid=""
    if ((attempt == 3)); then exit 1; fi
done
echo "etcd is up at $endpoint (data in $tmp/data)"

# EAE_BIN runs another build (or a stand-in) instead of building the release binary.
bin="${EAE_BIN:-}"
if [[ -z "$bin" ]]; then
    echo "==== building"
    cargo build --release
    bin="$PWD/target/release/etcd-await-election"
fi

export ETCD_AWAIT_ELECTION_LOCK_NAME=demo
export ETCD_AWAIT_ELECTION_ENDPOINTS="$endpoint"
export ETCD_AWAIT_ELECTION_LEASE_DURATION=5
export ETCD_AWAIT_ELECTION_RENEW_DEADLINE=3
export ETCD_AWAIT_ELECTION_RETRY_PERIOD=1

# Runs one instance in the background with its output prefixed by its name; sets $! to its PID.
# `timeout` bounds a hung instance (exit code 124).
start() {
    local name="$1" script="$2"
    ETCD_AWAIT_ELECTION_IDENTITY="$name" timeout 30 "$bin" sh -c "$script" \
        > >(sed -u "s/^/[$name] /") 2>&1 &
}

echo "==== alice and bob campaign for lock 'demo'"
start alice 'echo alice leads; sleep 3; echo alice done'
alice=$!
sleep 0.5
start bob 'echo bob leads; sleep 1'
bob=$!

sleep 1
echo "==== leader while alice leads (etcdctl elect -l demo):"
timeout 1 etcdctl --endpoints "$endpoint" elect -l demo || true
echo "==== candidates in queue order (etcdctl get --prefix demo/):"
etcdctl --endpoints "$endpoint" get --prefix demo/ --sort-by=CREATE || true

alice_rc=0 bob_rc=0
wait "$alice" || alice_rc=$?
alice=""
wait "$bob" || bob_rc=$?
bob=""
sleep 0.2 # let the output prefixers flush
echo "==== alice exited $alice_rc, bob exited $bob_rc"
if ((alice_rc == 0 && bob_rc == 0)); then
    echo "demo OK"
else
    echo "demo FAILED" >&2
    exit 1
fi
