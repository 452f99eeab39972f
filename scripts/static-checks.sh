#!/usr/bin/env bash
# Static build checks (issue 6), run by scripts/test.sh after cargo test. As root on Linux, with
# musl-tools, busybox-static, etcd-server/etcd-client, openssl, procps and util-linux (unshare).
#   1. scripts/build-static.sh: static musl release binary, size, `file`/`ldd`, --version.
#   2. Empty root: a directory holding only the binary, /busybox and three PEM files (no /etc,
#      /proc, /dev) is chroot'ed into; the binary wins an election on a mutual-TLS etcd, runs
#      `/busybox sh -c ...`, passes its exit code 7 through and leaves no key behind.
#   3. PID 1: the binary runs as PID 1 of a new PID namespace (unshare) against a plain-HTTP etcd:
#      orphaned grandchildren are reparented to it and reaped (no zombies) while its own child's exit
#      code (5) still comes through (and the same as an ordinary process, through
#      PR_SET_CHILD_SUBREAPER); SIGTERM from outside the namespace reaches the child, whose code
#      becomes the exit code (0 when it handles TERM, 143 when TERM kills it), and the lease is
#      revoked.
# Prints PASS/FAIL per check and exits 1 if any failed. Every process and temp dir is cleaned up.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if ((EUID != 0)); then
    echo "static-checks: needs root (chroot, unshare --pid --mount-proc)" >&2
    exit 1
fi
# etcd and etcdctl refuse ETCD_*/ETCDCTL_* variables that shadow flags; ours are set per command.
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep -E '^ETCD(CTL)?_' || true)
export ETCDCTL_API=3

tmp="$(mktemp -d "${TMPDIR:-/tmp}/eae-static.XXXXXX")"
bg_pids=() # etcd and unshare processes started here and not yet waited for
# forget PID: PID was waited for (it may be reused now): cleanup must not kill it.
forget() {
    local keep=() pid
    for pid in "${bg_pids[@]}"; do [[ $pid == "$1" ]] || keep+=("$pid"); done
    bg_pids=("${keep[@]}")
}
cleanup() {
    local pid
    for pid in "${bg_pids[@]}"; do
        # unshare runs with --kill-child: killing it kills the namespace's PID 1, and with it the rest.
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

failures=0
pass() { echo "PASS: $*"; }
fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}
indent() { sed 's/^/    | /'; }
now() { date +%s.%N; }
# alive PID: the process exists and is not a zombie (a child of ours that exited stays a zombie,
# which kill -0 does not tell apart, until it is waited for).
alive() { [[ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null || true)" =~ ^[^Z]$ ]]; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f s", b - a }'; }

# ---- 1. static build -----------------------------------------------------------------------

echo "==== static build (scripts/build-static.sh)"
if ! scripts/build-static.sh | tee "$tmp/build.out"; then
    echo "FAIL: scripts/build-static.sh"
    exit 1
fi
echo "PASS: static build"
bin="$(sed -n 's/^binary: //p' "$tmp/build.out" | tail -1)"
[[ -x "$bin" ]] || {
    echo "FAIL: no binary path from build-static.sh"
    exit 1
}

# ---- etcd helpers --------------------------------------------------------------------------

# free_port comes from scripts/lib.sh (a race with another binder is retried by start_etcd).

# Test PKI like tests/support: EC CA; server cert with IP:127.0.0.1 SAN and serverAuth+clientAuth;
# client cert /O=eae-test (no CN, so etcd takes no user name from it) with clientAuth.
make_pki() {
    local dir="$1"
    mkdir -p "$dir"
    (
        cd "$dir"
        local ec=(-algorithm EC -pkeyopt ec_paramgen_curve:P-256)
        printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
            extendedKeyUsage=serverAuth,clientAuth subjectAltName=IP:127.0.0.1,DNS:localhost >server.ext
        printf '%s\n' basicConstraints=CA:FALSE keyUsage=critical,digitalSignature,keyEncipherment \
            extendedKeyUsage=clientAuth >client.ext
        openssl genpkey "${ec[@]}" -out ca.key
        openssl req -x509 -new -key ca.key -out ca.pem -days 3 -subj /CN=eae-static-ca \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
        local name subj
        for name in server client; do
            subj=/O=eae-test
            [[ $name == server ]] && subj=/CN=localhost
            openssl genpkey "${ec[@]}" -out "$name.key"
            openssl req -new -key "$name.key" -subj "$subj" -out "$name.csr"
            openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3 \
                -extfile "$name.ext" -out "$name.pem"
        done
    ) >"$dir/openssl.log" 2>&1 || {
        cat "$dir/openssl.log" >&2
        return 1
    }
}

# start_etcd NAME SCHEME [PKI_DIR]: starts a single member on free loopback ports in the
# background (3 attempts) and waits until it is healthy; sets etcd_url.
start_etcd() {
    local name="$1" scheme="$2" pki="${3:-}" attempt client peer url pid
    local tls=() ctl=()
    if [[ -n "$pki" ]]; then
        tls=(--cert-file "$pki/server.pem" --key-file "$pki/server.key"
            --client-cert-auth --trusted-ca-file "$pki/ca.pem")
        ctl=(--cacert "$pki/ca.pem" --cert "$pki/client.pem" --key "$pki/client.key")
    fi
    for attempt in 1 2 3; do
        client="$(free_port)" peer="$(free_port)"
        url="$scheme://127.0.0.1:$client"
        rm -rf "$tmp/$name.data"
        etcd --name "$name" --data-dir "$tmp/$name.data" \
            --listen-client-urls "$url" --advertise-client-urls "$url" \
            --listen-peer-urls "http://127.0.0.1:$peer" \
            --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
            --initial-cluster "$name=http://127.0.0.1:$peer" --initial-cluster-state new \
            --heartbeat-interval 50 --election-timeout 500 \
            --logger zap --log-outputs stderr --log-level error "${tls[@]}" \
            </dev/null >"$tmp/$name.log" 2>&1 &
        pid=$!
        bg_pids+=("$pid")
        for _ in $(seq 100); do
            if etcdctl --endpoints "$url" "${ctl[@]}" --dial-timeout 1s --command-timeout 2s \
                endpoint health >/dev/null 2>&1; then
                etcd_url="$url"
                return 0
            fi
            alive "$pid" || break
            sleep 0.1
        done
        echo "etcd $name attempt $attempt failed:" >&2
        tail -5 "$tmp/$name.log" >&2
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        forget "$pid"
    done
    return 1
}

pki="$tmp/pki"
make_pki "$pki"
start_etcd tlsetcd https "$pki" || {
    echo "FAIL: cannot start the mutual-TLS etcd"
    exit 1
}
tlsetcd_url="$etcd_url"
start_etcd plainetcd http || {
    echo "FAIL: cannot start the plain-HTTP etcd"
    exit 1
}
plainetcd_url="$etcd_url"
echo "etcd (mutual TLS): $tlsetcd_url; etcd (plain HTTP): $plainetcd_url"

ctl_tls() {
    etcdctl --endpoints "$tlsetcd_url" --cacert "$pki/ca.pem" --cert "$pki/client.pem" \
        --key "$pki/client.key" "$@"
}
ctl_plain() { etcdctl --endpoints "$plainetcd_url" "$@"; }

# keys_left CTL LOCK: the keys under LOCK/, one a line (empty once the lease is revoked).
keys_left() {
    local out
    if out="$("$1" --command-timeout 5s get --prefix "$2/" --keys-only 2>&1)"; then
        sed '/^$/d' <<<"$out"
    else
        echo "(etcdctl failed: $out)"
    fi
}

# ---- 2. empty root -------------------------------------------------------------------------

echo "==== empty root: chroot with only the binary, /busybox and the TLS files; mutual-TLS etcd"
root="$tmp/root"
mkdir -p "$root/tls"
cp "$bin" "$root/etcd-await-election"
cp /usr/bin/busybox "$root/busybox"
cp "$pki/ca.pem" "$pki/client.pem" "$pki/client.key" "$root/tls/"
echo "root contents: $(cd "$root" && find . -mindepth 1 | sort | paste -sd ' ')"
lock="eae-static-root-$$"
start="$(now)"
rc=0
# A scratch container's environment: nothing but our variables (no PATH, no HOME).
# shellcheck disable=SC2016 # $ETCD_AWAIT_ELECTION_LEADER_KEY is for the child's shell
env -i \
    ETCD_AWAIT_ELECTION_LOCK_NAME="$lock" \
    ETCD_AWAIT_ELECTION_IDENTITY=empty-root \
    ETCD_AWAIT_ELECTION_ENDPOINTS="$tlsetcd_url" \
    ETCD_AWAIT_ELECTION_CACERT=/tls/ca.pem \
    ETCD_AWAIT_ELECTION_CERT=/tls/client.pem \
    ETCD_AWAIT_ELECTION_KEY=/tls/client.key \
    "$(command -v timeout)" 30 "$(command -v chroot)" "$root" \
    /etcd-await-election /busybox sh -c 'echo "led $ETCD_AWAIT_ELECTION_LEADER_KEY key=$ETCD_AWAIT_ELECTION_KEY"; exit 7' \
    </dev/null >"$tmp/root.out" 2>"$tmp/root.err" || rc=$?
took="$(elapsed "$start")"
echo "exit code $rc after $took; stdout: $(cat "$tmp/root.out"); wrapper log:"
indent <"$tmp/root.err"
if grep -Eq "^led $lock/[0-9a-f]+ key=/tls/client.key\$" "$tmp/root.out"; then
    pass "empty root: won the election over mutual TLS and ran /busybox sh (printed 'led $lock/…'; the TLS key variable reached it unchanged)"
else
    fail "empty root: the child did not run as leader (stdout: $(cat "$tmp/root.out"))"
fi
if ((rc == 7)); then
    pass "empty root: exit code 7 passed through"
else
    fail "empty root: exit code $rc, expected 7"
fi
left="$(keys_left ctl_tls "$lock")"
if [[ -z "$left" ]]; then
    pass "empty root: no key left under $lock/"
else
    fail "empty root: keys left under $lock/: $left"
fi

# ---- 3. PID 1 --------------------------------------------------------------------------------

# run_pid1 LOCK SCRIPT OUT: starts `unshare --pid --fork --mount-proc BIN /bin/sh -c SCRIPT` in the
# background (the binary is PID 1 of the new namespace; /proc shows only the namespace), output to
# OUT.out and OUT.err; passes EAE_PID1 through and sets EAE_GO=OUT.go. Sets ns_unshare (host PID of unshare) and ns_init
# (host PID of the binary).
run_pid1() {
    local lock="$1" script="$2" out="$3"
    EAE_PID1="${EAE_PID1-}" EAE_GO="$out.go" \
        ETCD_AWAIT_ELECTION_LOCK_NAME="$lock" \
        ETCD_AWAIT_ELECTION_IDENTITY=pid1 \
        ETCD_AWAIT_ELECTION_ENDPOINTS="$plainetcd_url" \
        ETCD_AWAIT_ELECTION_LEASE_DURATION=5 \
        ETCD_AWAIT_ELECTION_RENEW_DEADLINE=3 \
        ETCD_AWAIT_ELECTION_RETRY_PERIOD=1 \
        unshare --pid --fork --mount-proc --kill-child -- "$bin" /bin/sh -c "$script" \
        </dev/null >"$out.out" 2>"$out.err" &
    ns_unshare=$!
    bg_pids+=("$ns_unshare")
    ns_init=""
    for _ in $(seq 200); do
        ns_init="$(pgrep -P "$ns_unshare" || true)"
        [[ -n "$ns_init" ]] && return 0
        alive "$ns_unshare" || return 0
        sleep 0.01
    done
}

# wait_pid1 SECONDS: waits for unshare (which exits with its child's code); after SECONDS the
# namespace's PID 1 is SIGKILLed (unshare itself ignores SIGTERM while it waits). Sets ns_rc.
wait_pid1() {
    local deadline=$((SECONDS + $1))
    while alive "$ns_unshare"; do
        if ((SECONDS >= deadline)); then
            echo "timed out after $1 s; killing the namespace" >&2
            if [[ -n "$ns_init" ]]; then kill -9 "$ns_init" 2>/dev/null || true; fi
            break
        fi
        sleep 0.05
    done
    ns_rc=0
    wait "$ns_unshare" || ns_rc=$?
    forget "$ns_unshare"
}

# The child has a sub-shell start three background loops and exit at once: the loops are orphaned
# and must be reparented to the binary (its parent, $PPID: as PID 1 of the namespace, or as the
# subreaper it registers as otherwise). The child checks that, then lets the loops end (file
# $EAE_GO) and waits until they are gone from /proc (reaped: a zombie stays there). Under EAE_PID1=1
# it also checks that its parent is PID 1 and that no process in the namespace is a zombie.
# Exit 5 = all good; 10 = not under PID 1; 8 = not reparented; 9 = zombie left.
# shellcheck disable=SC2016 # expanded by the child's shell
reap_script='
    if [ "${EAE_PID1-}" = 1 ] && [ "$PPID" != 1 ]; then echo "parent is $PPID, not 1"; exit 10; fi
    pids=$(sh -c "for i in 1 2 3; do
        (while [ ! -e \"\$EAE_GO\" ]; do sleep 0.02; done) >/dev/null 2>&1 &
        echo \$!
    done")
    for p in $pids; do
        parent=$(ps -o ppid= -p "$p" | tr -d " ")
        [ "$parent" = "$PPID" ] || { echo "orphan $p has parent $parent, not $PPID"; exit 8; }
    done
    echo "orphans $(echo $pids) reparented to the binary (PID $PPID)"
    : >"$EAE_GO"
    for p in $pids; do
        i=0
        while [ -e "/proc/$p" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
        [ ! -e "/proc/$p" ] || { echo "orphan $p not reaped: $(cat "/proc/$p/stat")"; exit 9; }
    done
    if [ "${EAE_PID1-}" = 1 ]; then
        zombies=$(ps -e -o stat=,pid=,comm= | awk "\$1 ~ /^Z/")
        [ -z "$zombies" ] || { echo "zombies: $zombies"; exit 9; }
        echo "orphans reaped, no zombies; namespace:"
        ps -e -o pid=,ppid=,stat=,comm=
    else
        echo "orphans reaped, no zombies"
    fi
    exit 5'

# reap_verdict NAME LABEL RC LOCK: PASS/FAIL lines for one reaping run.
reap_verdict() {
    local name="$1" label="$2" rc="$3" lock="$4"
    echo "exit code $rc; child output:"
    indent <"$tmp/$name.out"
    echo "wrapper log:"
    indent <"$tmp/$name.err"
    if grep -q '^orphans reaped, no zombies' "$tmp/$name.out" && grep -q 'reparented to the binary' "$tmp/$name.out"; then
        pass "$label: orphaned grandchildren were reparented to the binary and reaped, no zombies"
    else
        fail "$label: orphan reaping (see the child output above)"
    fi
    if ((rc == 5)); then
        pass "$label: exit code 5 is the child's own (its status was not lost to the reaper)"
    else
        fail "$label: exit code $rc, expected 5"
    fi
    left="$(keys_left ctl_plain "$lock")"
    if [[ -z "$left" ]]; then
        pass "$label: no key left under $lock/"
    else
        fail "$label: keys left under $lock/: $left"
    fi
}

echo "==== PID 1: orphans are reaped, the child's own exit code survives; plain-HTTP etcd"
lock="eae-static-reap-$$"
start="$(now)"
EAE_PID1=1 run_pid1 "$lock" "$reap_script" "$tmp/reap"
wait_pid1 30
echo "took $(elapsed "$start")"
reap_verdict reap "PID 1" "$ns_rc" "$lock"

echo "==== subreaper (not PID 1): the same, with the binary as an ordinary process"
lock="eae-static-subreaper-$$"
rc=0
EAE_GO="$tmp/subreaper.go" \
    ETCD_AWAIT_ELECTION_LOCK_NAME="$lock" \
    ETCD_AWAIT_ELECTION_IDENTITY=subreaper \
    ETCD_AWAIT_ELECTION_ENDPOINTS="$plainetcd_url" \
    timeout -k 5 30 "$bin" /bin/sh -c "$reap_script" \
    </dev/null >"$tmp/subreaper.out" 2>"$tmp/subreaper.err" || rc=$?
reap_verdict subreaper "subreaper" "$rc" "$lock"

# sigterm_case NAME TRAP EXPECTED: the child (optionally trapping TERM and writing a marker) runs
# until the namespace's PID 1 gets SIGTERM from the host; expects exit code EXPECTED.
sigterm_case() {
    local name="$1" trap_cmd="$2" expected="$3"
    local marker="$tmp/$name.marker" ready="$tmp/$name.ready"
    local lock="eae-static-$name-$$"
    local script="$trap_cmd
        echo leading > '$ready'
        while :; do sleep 0.05; done"
    echo "==== PID 1: SIGTERM from outside the namespace ($name)"
    run_pid1 "$lock" "$script" "$tmp/$name"
    local waited=0
    until [[ -e "$ready" ]] || ((waited >= 300)) || ! alive "$ns_unshare"; do
        sleep 0.05
        waited=$((waited + 1))
    done
    local held
    held="$(keys_left ctl_plain "$lock")"
    if [[ -e "$ready" && -n "$ns_init" ]] && grep -q "^$lock/" <<<"$held"; then
        echo "child leads (key $held); SIGTERM to the binary (host PID $ns_init, PID 1 inside)"
        kill -TERM "$ns_init"
    fi
    wait_pid1 20
    echo "exit code $ns_rc; child output:"
    indent <"$tmp/$name.out"
    echo "wrapper log:"
    indent <"$tmp/$name.err"
    if [[ -n "$trap_cmd" ]]; then
        if [[ "$(cat "$marker" 2>/dev/null)" == got-term ]]; then
            pass "PID 1 ($name): SIGTERM reached the child (marker written)"
        else
            fail "PID 1 ($name): the child did not see SIGTERM"
        fi
    fi
    if [[ -e "$ready" ]] && ((ns_rc == expected)); then
        pass "PID 1 ($name): exit code $ns_rc is the child's ($expected)"
    else
        fail "PID 1 ($name): exit code $ns_rc, expected $expected (child led: $([[ -e $ready ]] && echo yes || echo no))"
    fi
    left="$(keys_left ctl_plain "$lock")"
    if grep -q "^$lock/" <<<"$held" && [[ -z "$left" ]]; then
        pass "PID 1 ($name): lease revoked, no key left under $lock/"
    else
        fail "PID 1 ($name): key while leading: '${held}', keys left: '${left}'"
    fi
}
sigterm_case term-trapped "trap 'echo got-term > \"$tmp/term-trapped.marker\"; exit 0' TERM" 0
sigterm_case term-default "" 143

# While it waits in the queue (another holder leads), SIGTERM makes PID 1 leave: exit 128+15, its
# own key gone, the command never started.
echo "==== PID 1: SIGTERM while waiting for leadership"
lock="eae-static-term-waiting-$$"
holder="$(ctl_plain lease grant 60 | awk '{ print $2 }')"
ctl_plain put --lease="$holder" "$lock/$holder" holder >/dev/null
run_pid1 "$lock" "echo ran > '$tmp/term-waiting.ran'" "$tmp/term-waiting"
for _ in $(seq 300); do
    [[ "$(keys_left ctl_plain "$lock" | wc -l)" == 2 ]] && break
    alive "$ns_unshare" || break
    sleep 0.05
done
queued="$(keys_left ctl_plain "$lock")"
if [[ "$(wc -l <<<"$queued")" == 2 && -n "$ns_init" ]]; then
    echo "queued behind the holder (keys: $(paste -sd ' ' <<<"$queued")); SIGTERM to host PID $ns_init"
    kill -TERM "$ns_init"
fi
wait_pid1 20
echo "exit code $ns_rc; wrapper log:"
indent <"$tmp/term-waiting.err"
left="$(keys_left ctl_plain "$lock")"
if ((ns_rc == 143)) && [[ ! -e "$tmp/term-waiting.ran" ]]; then
    pass "PID 1 (term-waiting): left the queue with exit code 143, the command never ran"
else
    fail "PID 1 (term-waiting): exit code $ns_rc, expected 143 (command ran: $([[ -e "$tmp/term-waiting.ran" ]] && echo yes || echo no))"
fi
if [[ "$(wc -l <<<"$queued")" == 2 && "$left" == "$lock/$holder" ]]; then
    pass "PID 1 (term-waiting): its key was removed, the holder's kept"
else
    fail "PID 1 (term-waiting): keys while queued: '$queued', keys left: '$left' (holder $lock/$holder)"
fi
ctl_plain lease revoke "$holder" >/dev/null 2>&1 || true

echo
if ((failures)); then
    echo "static checks: $failures FAILED"
    exit 1
fi
echo "static checks: all passed"
