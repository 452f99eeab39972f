#!/usr/bin/env bash
# Benchmarks etcd-await-election against `etcdctl lock NAME CMD` (etcd's Go client) on a throwaway
# etcd, figure by figure, and writes target/bench/results.md and target/bench/results.json.
#
#   scripts/bench.sh            full run (< 10 minutes; run it on a quiet machine)
#   scripts/bench.sh --quick    tiny n, short windows (< 100 s): a smoke test of the harness
#
# Debian 12, as root, no stdin. Installs etcd-server/etcd-client if missing, builds the release
# binary, then hands over to scripts/bench.py (Python 3 standard library only). Targets are reported,
# not asserted: the exit status is 0 when every figure ran and non-zero only when the harness failed.
#
# The static musl build, when present at
# ${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-musl/release/etcd-await-election (scripts/
# build-static.sh builds it; BENCH_STATIC_BIN names another path), is measured in figure 8 and, side
# by side with the release build, in figures 4 and 5.
#
# Environment: BENCH_BIN runs another binary instead of the fresh release build; BENCH_USE_STATIC=1
# runs the static build in every figure instead; BENCH_KEEP=1 keeps the scratch directory (logs);
# BENCH_ONLY=1,3 runs only those figures (0 calibration, 1..3, 4 = 4+5, 6..9; for debugging).
#
# Figure 9 (etcd's cost of idle candidates) reads etcd's own CPU from /proc/ETCD/task/*/schedstat
# while 1 leader + 50 waiters (10 with --quick) of each tool sit idle on one lock, against an equal
# window with no candidate, so it wants a quiet machine most of all.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=()
for arg in "$@"; do
    case "$arg" in
    --quick) quick=(--quick) ;;
    -h | --help)
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
        exit 0
        ;;
    *)
        echo "bench.sh: unknown argument: $arg (use --quick or --help)" >&2
        exit 2
        ;;
    esac
done

started=$SECONDS
export DEBIAN_FRONTEND=noninteractive

source scripts/lib.sh
ensure_packages etcd-server etcd-client
for tool in etcd etcdctl python3; do
    command -v "$tool" >/dev/null || {
        echo "bench.sh: $tool not found" >&2
        exit 1
    }
done

target_dir="${CARGO_TARGET_DIR:-target}"
static_bin="${BENCH_STATIC_BIN:-$target_dir/x86_64-unknown-linux-musl/release/etcd-await-election}"
bin="${BENCH_BIN:-}"
if [[ -z "$bin" ]]; then
    echo "==== cargo build --release"
    cargo build --release
    bin="$target_dir/release/etcd-await-election"
    if [[ "${BENCH_USE_STATIC:-}" == 1 ]]; then
        [[ -x "$static_bin" ]] || {
            echo "bench.sh: BENCH_USE_STATIC=1 but $static_bin does not exist" >&2
            exit 1
        }
        bin="$static_bin"
    fi
fi
[[ -x "$bin" ]] || {
    echo "bench.sh: $bin is not an executable" >&2
    exit 1
}
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
if [[ -e "$static_bin" ]]; then static_bin="$(cd "$(dirname "$static_bin")" && pwd)/$(basename "$static_bin")"; fi

out="$PWD/target/bench"
mkdir -p "$out"
tmp="$(mktemp -d "${TMPDIR:-/tmp}/eae-bench.XXXXXX")"
registry="$tmp/sessions"
: >"$registry"
py_pid=""

# Kills every process of every session bench.py started (it writes their ids to $registry), in case
# bench.py itself died before its own cleanup. Processes are matched by session id, so children in
# their own process groups (our wrapper puts its command in one) are found too.
# shellcheck disable=SC2317 # (these two run from traps)
kill_sessions() {
    local sids stat rest pid
    sids=" $(tr '\n' ' ' <"$registry" 2>/dev/null) "
    [[ "$sids" == "  " ]] && return 0
    for dir in /proc/[0-9]*; do
        pid="${dir#/proc/}"
        stat="$(cat "$dir/stat" 2>/dev/null)" || continue
        rest="${stat##*) }"
        # shellcheck disable=SC2086
        set -- $rest # state ppid pgrp session ...
        if [[ "$sids" == *" $4 "* ]]; then kill -9 "$pid" 2>/dev/null || true; fi
    done
}
# shellcheck disable=SC2317
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -n "$py_pid" ]] && kill -0 "$py_pid" 2>/dev/null; then
        kill -TERM "$py_pid" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$py_pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$py_pid" 2>/dev/null || true
    fi
    kill_sessions
    if [[ "${BENCH_KEEP:-}" == 1 ]]; then echo "scratch directory kept: $tmp"; else rm -rf "$tmp"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

only=()
if [[ -n "${BENCH_ONLY:-}" ]]; then only=(--only "$BENCH_ONLY"); fi
echo "==== benchmark${quick:+ (quick)}: $bin"
python3 scripts/bench.py "${quick[@]}" "${only[@]}" --bin "$bin" --static-bin "$static_bin" \
    --out "$out" --tmp "$tmp" --registry "$registry" &
py_pid=$!
rc=0
wait "$py_pid" || rc=$?
py_pid=""
echo "==== bench.sh finished in $((SECONDS - started)) s (exit $rc); results in $out/results.md"
exit "$rc"
