#!/usr/bin/env bash
# Chaos test: five etcd-await-election candidates on one lock against a 3-member etcd cluster, with
# random faults for SECONDS (default 60), then checks that no two commands (or a command's
# grandchild and a later command) ever ran at once, that none outlived its wrapper, that no lease
# was left behind, that fencing tokens never went backwards, that no command was started on a
# lapsed renewal and that a preempted command stopped within 2 s. Prints the figures and PASS or
# FAIL; exits 0 only on PASS (1 FAIL, 2 harness error, 130 interrupted).
#
#   scripts/chaos.sh [SECONDS] [--seed N] [--quiet] [--keep]
#
# Faults: SIGKILL/SIGTERM of a wrapper, SIGKILL + restart of an etcd member (one at a time), SIGSTOP
# of the whole cluster for 2.2-4.5 s (past RENEW_DEADLINE; about half of them past the lease TTL),
# a stalled stderr (2 identities log through a pipe the driver stops reading and fills), a frozen
# watch flow (2 identities reach etcd through a proxy that holds the watch connections while unary
# calls pass), etcdctl del of the leader's key (often while its watch is frozen), and commands that
# start a grandchild ignoring SIGTERM, 60% of them setsid'd (which may outlive a SIGKILL'd wrapper:
# the documented limit; counted, then killed).
# Candidates: LEASE_DURATION=3 RENEW_DEADLINE=2 RETRY_PERIOD=500ms; exited ones are restarted.
# --seed N replays the same choices (not the same timing); --quiet prints progress and the summary
# only; --keep keeps the scratch directory. The logs of the last run (and timeline.txt, every event
# merged) are copied to ${CARGO_TARGET_DIR:-target}/chaos/last/. CHAOS_BIN=path tests that binary
# instead of building the release one. Details: scripts/chaos.py's docstring.
# Debian 12, as root, no stdin: installs etcd-server/etcd-client if missing, builds the release
# binary.
# Every process is killed and the scratch directory removed at the end, also on Ctrl-C or error.
set -euo pipefail
cd "$(dirname "$0")/.."

args=()
keep=0
while (($#)); do
    case "$1" in
    -h | --help)
        sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    --keep) keep=1 ;;
    --seed)
        [[ $# -ge 2 ]] || {
            echo "chaos.sh: --seed needs a value" >&2
            exit 2
        }
        args+=(--seed "$2")
        shift
        ;;
    --seed=*) args+=(--seed "${1#--seed=}") ;;
    --quiet) args+=(--quiet) ;;
    [0-9]*) args+=("$1") ;;
    *)
        echo "chaos.sh: unknown argument: $1 (see --help)" >&2
        exit 2
        ;;
    esac
    shift
done

export DEBIAN_FRONTEND=noninteractive
source scripts/lib.sh
if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
    ensure_packages etcd-server etcd-client
fi
for tool in etcd python3; do
    command -v "$tool" >/dev/null || {
        echo "chaos.sh: $tool not found" >&2
        exit 2
    }
done
# etcd refuses ETCD_* variables that shadow its flags; the candidates get theirs from chaos.py.
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep -E '^ETCD(CTL)?_' || true)

started=$SECONDS
target_dir="${CARGO_TARGET_DIR:-target}"
if [[ -n "${CHAOS_BIN:-}" ]]; then
    bin="$(cd "$(dirname "$CHAOS_BIN")" && pwd)/$(basename "$CHAOS_BIN")"
else
    echo "==== cargo build --release"
    cargo build --release
    bin="$(cd "$target_dir/release" && pwd)/etcd-await-election"
fi
[[ -x "$bin" ]] || {
    echo "chaos.sh: $bin is not an executable" >&2
    exit 2
}
save="$(mkdir -p "$target_dir/chaos" && cd "$target_dir/chaos" && pwd)/last"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/eae-chaos.XXXXXX")"
registry="$tmp/sessions"
: >"$registry"
py_pid=""
# Backstop: chaos.py kills its own sessions and empties the registry; whatever is still listed
# (chaos.py itself was killed) is killed here, session by session, then by scratch-dir path.
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local sid
    if [[ -n "$py_pid" ]] && kill -0 "$py_pid" 2>/dev/null; then
        kill -TERM "$py_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$py_pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$py_pid" 2>/dev/null || true
    fi
    if [[ -s "$registry" ]]; then
        while read -r sid; do
            if [[ "$sid" =~ ^[0-9]+$ ]]; then pkill -KILL -s "$sid" 2>/dev/null || true; fi
        done <"$registry"
    fi
    # Last, by pid: whatever names the scratch directory (a unique mkdtemp name) in its command
    # line, such as a setsid'd grandchild whose session chaos.py had not listed yet.
    local proc argv
    for proc in /proc/[0-9]*; do
        argv=()
        mapfile -d '' argv 2>/dev/null <"$proc/cmdline" || continue
        if [[ "${argv[*]}" == *"$tmp/"* ]]; then kill -KILL "${proc#/proc/}" 2>/dev/null || true; fi
    done
    if ((keep)); then
        echo "scratch directory kept: $tmp"
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap '[[ -n "$py_pid" ]] && kill -TERM "$py_pid" 2>/dev/null || true' INT TERM HUP

echo "==== chaos run (build took $((SECONDS - started)) s)"
python3 scripts/chaos.py --bin "$bin" --tmp "$tmp" --registry "$registry" --save "$save" \
    ${args[@]+"${args[@]}"} &
py_pid=$!
set +e
while true; do
    wait "$py_pid"
    rc=$?
    kill -0 "$py_pid" 2>/dev/null || break
done
set -e
py_pid=""
echo "==== chaos.sh: $((SECONDS - started)) s in all, exit $rc"
exit "$rc"
