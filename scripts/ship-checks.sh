#!/usr/bin/env bash
# Ship checks (issue 14): what a release publishes works. Debian 12, as root, no stdin; installs
# what is missing (file, qemu-user-static, etcd, openssl, busybox-static, umoci, skopeo, PyYAML).
#   1. scripts/release.sh: both binaries are static, at most MAX_BYTES each, of the right
#      architecture, `sha256sum -c SHA256SUMS` passes, and --version names the version, the target
#      and the commit of this tree (the arm64 binary under qemu-aarch64-static, called explicitly:
#      binfmt may not be registered).
#   2. arm64 for real, under qemu: against a mutual-TLS etcd started here, it leads, its command
#      runs, a SIGTERM to it reaches the command (which traps TERM and exits 0), the wrapper exits
#      0 and no key is left under the lock.
#   3. scripts/image.sh: the OCI layout's index lists linux/amd64 and linux/arm64; every blob's
#      digest and size match; each config's entrypoint is the binary; each layer holds exactly one
#      file, /etcd-await-election, 0755, 0:0, the image's mtime, byte for byte the released binary;
#      a second run gives the same digests; skopeo copies the whole index (it checks every
#      digest); umoci unpacks the amd64 image, and that rootfs passes the empty-root test of
#      scripts/static-checks.sh (chroot with only it, /busybox and the TLS files: it leads over
#      mutual TLS, runs the command, passes exit code 7 through, leaves no key).
#   4. examples/: the Kubernetes YAML parses (also with its username/password variant enabled) and
#      has the fields the README promises; the systemd unit passes `systemd-analyze verify` (or a
#      parse where systemd is absent); the Dockerfiles parse, and Dockerfile.scratch's
#      TARGETARCH mapping gives the right target and toolchain for each builder/target pair and,
#      for amd64 -> arm64, the very binary release.sh built.
# Prints PASS/FAIL per check and exits 1 if any failed. Every process and temp dir is cleaned up.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
export DEBIAN_FRONTEND=noninteractive

if ((EUID != 0)); then
    echo "ship-checks: needs root (apt-get, chroot)" >&2
    exit 1
fi

readonly NAME=etcd-await-election
readonly MAX_BYTES=2000000
readonly -A TARGETS=([amd64]=x86_64-unknown-linux-musl [arm64]=aarch64-unknown-linux-musl)
readonly -A FILE_ARCH=([amd64]=x86-64 [arm64]="ARM aarch64")

echo "==== setup"
# file: static checks; qemu-user-static: the arm64 binary; etcd-server/etcd-client/openssl: a
# mutual-TLS etcd; busybox-static: the empty root's shell; umoci, skopeo: independent readers of
# the OCI layout.
ensure_packages file qemu-user-static etcd-server etcd-client openssl busybox-static umoci skopeo
if ! python3 -c 'import yaml' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore pyyaml
fi
# etcd and etcdctl refuse ETCD_*/ETCDCTL_* variables that shadow flags; ours are set per command.
while IFS= read -r var; do unset "$var"; done < <(compgen -e | grep -E '^ETCD(CTL)?_' || true)
export ETCDCTL_API=3

tmp="$(mktemp -d "${TMPDIR:-/tmp}/eae-ship.XXXXXX")"
bg_pids=() # etcd and wrapper processes started here and not yet waited for
forget() {
    local keep=() pid
    for pid in "${bg_pids[@]}"; do [[ $pid == "$1" ]] || keep+=("$pid"); done
    bg_pids=("${keep[@]}")
}
cleanup() {
    local pid
    for pid in "${bg_pids[@]}"; do
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
# expect MESSAGE COMMAND...: PASS when COMMAND succeeds, else FAIL (never exits: set -e is moot).
expect() {
    local msg="$1"
    shift
    if "$@"; then pass "$msg"; else fail "$msg"; fi
}
equals() { [[ "$1" == "$2" ]]; }
contains() { [[ "$1" == *"$2"* ]]; }
empty() { [[ -z "$1" ]]; }
indent() { sed 's/^/    | /'; }
alive() { [[ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null || true)" =~ ^[^Z]$ ]]; }
started=$SECONDS

# ---- 1. release assets ---------------------------------------------------------------------

echo "==== release (scripts/release.sh)"
if ! scripts/release.sh >"$tmp/release.out" 2>&1; then
    cat "$tmp/release.out"
    echo "FAIL: scripts/release.sh"
    exit 1
fi
sed -n '/^==== release assets/,$p' "$tmp/release.out"
assets="$(sed -n 's/^assets: //p' "$tmp/release.out" | tail -1)"
[[ -d "$assets" ]] || {
    echo "FAIL: no assets directory from release.sh"
    exit 1
}
version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | sed -n 1p)"

# The commit --version must name: what build.rs computes for this tree (the same git commands).
if [[ "$(git rev-parse --show-toplevel 2>/dev/null)" == "$(pwd -P)" ]]; then
    commit="$(git rev-parse --short HEAD)"
    if [[ -n "$(git --no-optional-locks status --porcelain --untracked-files=no -- \
        src build.rs Cargo.toml Cargo.lock)" ]]; then
        commit+="-dirty"
    fi
else
    commit=unknown
fi

# run_arch ARCH ARGS...: runs the ARCH binary (arm64 under qemu-aarch64-static).
run_arch() {
    local arch="$1"
    shift
    if [[ $arch == arm64 ]]; then
        qemu-aarch64-static "$assets/$NAME-linux-arm64" "$@"
    else
        "$assets/$NAME-linux-amd64" "$@"
    fi
}

for arch in amd64 arm64; do
    bin="$assets/$NAME-linux-$arch"
    size="$(stat -c %s "$bin")"
    expect "$arch: size $size bytes <= $MAX_BYTES" test "$size" -le "$MAX_BYTES"
    file_out="$(file -b "$bin")"
    echo "$arch: file: $file_out"
    expect "$arch: file says statically linked" grep -Eq 'static-pie linked|statically linked' <<<"$file_out"
    expect "$arch: file says ${FILE_ARCH[$arch]}" contains "$file_out" "${FILE_ARCH[$arch]}"
    expected="$NAME $version (${TARGETS[$arch]}, commit $commit)"
    got="$(run_arch "$arch" --version 2>&1 || true)"
    expect "$arch: --version prints '$got' (expected '$expected')" equals "$got" "$expected"
done
sha_rc=0
(cd "$assets" && sha256sum -c SHA256SUMS) >"$tmp/sha.out" 2>&1 || sha_rc=$?
indent <"$tmp/sha.out"
expect "sha256sum -c SHA256SUMS" test "$sha_rc" -eq 0
expect "SHA256SUMS lists exactly the two binaries" \
    equals "$(cut -d' ' -f3 "$assets/SHA256SUMS" | paste -sd ' ')" "$NAME-linux-amd64 $NAME-linux-arm64"

# ---- etcd ------------------------------------------------------------------------------------

# Test PKI as in scripts/static-checks.sh: EC CA; server cert with IP:127.0.0.1 SAN and
# serverAuth+clientAuth; client cert /O=eae-test (no CN) with clientAuth.
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
        openssl req -x509 -new -key ca.key -out ca.pem -days 3 -subj /CN=eae-ship-ca \
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

# start_etcd: one mutual-TLS member on free loopback ports (3 attempts), waits until healthy;
# sets etcd_url.
start_etcd() {
    local attempt client peer url pid
    for attempt in 1 2 3; do
        client="$(free_port)" peer="$(free_port)"
        url="https://127.0.0.1:$client"
        rm -rf "$tmp/etcd.data"
        etcd --name ship --data-dir "$tmp/etcd.data" \
            --listen-client-urls "$url" --advertise-client-urls "$url" \
            --listen-peer-urls "http://127.0.0.1:$peer" \
            --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
            --initial-cluster "ship=http://127.0.0.1:$peer" --initial-cluster-state new \
            --heartbeat-interval 50 --election-timeout 500 \
            --logger zap --log-outputs stderr --log-level error \
            --cert-file "$pki/server.pem" --key-file "$pki/server.key" \
            --client-cert-auth --trusted-ca-file "$pki/ca.pem" \
            </dev/null >"$tmp/etcd.log" 2>&1 &
        pid=$!
        bg_pids+=("$pid")
        etcd_url="$url"
        for _ in $(seq 100); do
            ctl --dial-timeout 1s --command-timeout 2s endpoint health >/dev/null 2>&1 && return 0
            alive "$pid" || break
            sleep 0.1
        done
        echo "etcd attempt $attempt failed:" >&2
        tail -5 "$tmp/etcd.log" >&2
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        forget "$pid"
    done
    return 1
}
ctl() {
    etcdctl --endpoints "$etcd_url" --cacert "$pki/ca.pem" --cert "$pki/client.pem" \
        --key "$pki/client.key" "$@"
}
# keys_left LOCK: the keys under LOCK/, one a line (empty once the lease is revoked).
keys_left() {
    local out
    if out="$(ctl --command-timeout 5s get --prefix "$1/" --keys-only 2>&1)"; then
        sed '/^$/d' <<<"$out"
    else
        echo "(etcdctl failed: $out)"
    fi
}

pki="$tmp/pki"
make_pki "$pki"
start_etcd || {
    echo "FAIL: cannot start the mutual-TLS etcd"
    exit 1
}
echo "etcd (mutual TLS): $etcd_url"

# ---- 2. arm64 under qemu: a real election ----------------------------------------------------

echo "==== arm64 under qemu-aarch64-static: lead, run, SIGTERM, leave"
lock="eae-ship-qemu-$$"
q="$tmp/qemu"
mkdir -p "$q"
# The command (a host /bin/sh: qemu-user leaves execve to the kernel) writes its election key
# to $EAE_DIR/ready, then loops until SIGTERM, which it traps: marker, exit 0. The key is
# ETCD_AWAIT_ELECTION_LEADER_KEY (0.2.0); 0.1.0 called it ETCD_AWAIT_ELECTION_KEY, and a wrong
# fallback (the TLS key path) fails the check below.
# shellcheck disable=SC2016 # expanded by the command's shell
script='trap "echo got-term > \"$EAE_DIR/marker\"; exit 0" TERM
    echo "${ETCD_AWAIT_ELECTION_LEADER_KEY:-$ETCD_AWAIT_ELECTION_KEY}" > "$EAE_DIR/ready.tmp"
    mv "$EAE_DIR/ready.tmp" "$EAE_DIR/ready"
    while :; do sleep 0.05; done'
start=$SECONDS
EAE_DIR="$q" \
    ETCD_AWAIT_ELECTION_LOCK_NAME="$lock" \
    ETCD_AWAIT_ELECTION_IDENTITY=qemu-arm64 \
    ETCD_AWAIT_ELECTION_ENDPOINTS="$etcd_url" \
    ETCD_AWAIT_ELECTION_CACERT="$pki/ca.pem" \
    ETCD_AWAIT_ELECTION_CERT="$pki/client.pem" \
    ETCD_AWAIT_ELECTION_KEY="$pki/client.key" \
    ETCD_AWAIT_ELECTION_LEASE_DURATION=6 \
    ETCD_AWAIT_ELECTION_RENEW_DEADLINE=4 \
    ETCD_AWAIT_ELECTION_RETRY_PERIOD=1 \
    qemu-aarch64-static "$assets/$NAME-linux-arm64" /bin/sh -c "$script" \
    </dev/null >"$q/out" 2>"$q/err" &
qpid=$!
bg_pids+=("$qpid")
for _ in $(seq 400); do # 20 s
    [[ -e "$q/ready" ]] && break
    alive "$qpid" || break
    sleep 0.05
done
held="$(ctl --command-timeout 5s get --prefix "$lock/" 2>&1 || true)"
key="$(cat "$q/ready" 2>/dev/null || true)"
echo "leading after $((SECONDS - start)) s; key $key; etcdctl get --prefix $lock/:"
indent <<<"$held"
expect "arm64: leads (its key '$key' holds its identity) and runs its command" \
    equals "$held" "${key:-no key}"$'\n'qemu-arm64
if alive "$qpid"; then kill -TERM "$qpid"; fi
for _ in $(seq 200); do # 10 s
    alive "$qpid" || break
    sleep 0.05
done
if alive "$qpid"; then
    echo "still running 10 s after SIGTERM: killing it" >&2
    kill -9 "$qpid" 2>/dev/null || true
fi
rc=0
wait "$qpid" || rc=$?
forget "$qpid"
echo "exit code $rc after $((SECONDS - start)) s; wrapper log:"
indent <"$q/err"
expect "arm64: SIGTERM was forwarded to the command (it trapped it)" \
    equals "$(cat "$q/marker" 2>/dev/null || true)" got-term
expect "arm64: exit code $rc is the command's (0)" test "$rc" -eq 0
left="$(keys_left "$lock")"
expect "arm64: no key left under $lock/ (left: '${left}')" equals "${key:+led}:$left" "led:"

# ---- 3. the OCI image ------------------------------------------------------------------------

echo "==== image (scripts/image.sh)"
if ! scripts/image.sh --no-build >"$tmp/image.out" 2>&1; then
    cat "$tmp/image.out"
    echo "FAIL: scripts/image.sh"
    exit 1
fi
cat "$tmp/image.out"
oci="$(sed -n 's/^image: //p' "$tmp/image.out" | tail -1)"
epoch="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD 2>/dev/null || echo 0)}"

# The layout, read by a small independent reader: prints PASS/FAIL lines, and "layer ARCH FILE"
# for each architecture's layer blob.
python3 - "$oci" "$version" >"$tmp/oci-check.out" <<'PY' || true
import hashlib, json, os, sys

oci, version = sys.argv[1], sys.argv[2]
ok = True

def check(cond, msg):
    global ok
    print(("PASS: " if cond else "FAIL: ") + msg)
    ok = ok and cond
    return cond

def blob(desc):
    algo, hexd = desc["digest"].split(":", 1)
    path = os.path.join(oci, "blobs", algo, hexd)
    data = open(path, "rb").read()
    check(hashlib.sha256(data).hexdigest() == hexd and len(data) == desc["size"],
          f"image: blob {desc['digest'][:19]}… matches its digest and size {desc['size']}")
    return path, data

layout = json.load(open(os.path.join(oci, "oci-layout")))
check(layout.get("imageLayoutVersion") == "1.0.0", "image: oci-layout 1.0.0")
top = json.load(open(os.path.join(oci, "index.json")))
refs = {m.get("annotations", {}).get("org.opencontainers.image.ref.name"): m for m in top["manifests"]}
check(set(refs) == {version, f"{version}-amd64", f"{version}-arm64"},
      f"image: index.json names {version}, {version}-amd64, {version}-arm64 (has {sorted(map(str, refs))})")
multi = refs.get(version)
if check(multi is not None and multi["mediaType"] == "application/vnd.oci.image.index.v1+json",
         f"image: {version} is an image index"):
    _, data = blob(multi)
    index = json.loads(data)
    plats = sorted((m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"])
    check(plats == [("linux", "amd64"), ("linux", "arm64")],
          f"image: the index lists linux/amd64 and linux/arm64 (lists {plats})")
    for m in index["manifests"]:
        arch = m["platform"]["architecture"]
        single = refs.get(f"{version}-{arch}", {})
        check(single.get("digest") == m["digest"], f"image: {version}-{arch} is the index's {arch} manifest")
        _, data = blob(m)
        manifest = json.loads(data)
        check(manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json",
              f"image: {arch} manifest media type")
        _, data = blob(manifest["config"])
        config = json.loads(data)
        check(config["architecture"] == arch and config["os"] == "linux",
              f"image: {arch} config says linux/{arch}")
        check(config["config"].get("Entrypoint") == ["/etcd-await-election"] and not config["config"].get("Cmd"),
              f"image: {arch} entrypoint is {config['config'].get('Entrypoint')}, no Cmd")
        layers = manifest["layers"]
        if check(len(layers) == 1 and layers[0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip",
                 f"image: {arch} has one gzip layer"):
            path, _ = blob(layers[0])
            import gzip
            tar = gzip.open(path).read()
            check(config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(tar).hexdigest()],
                  f"image: {arch} config's diff_id is the uncompressed layer's digest")
            print(f"layer {arch} {path}")
print("checked")
sys.exit(0 if ok else 1)
PY
grep -v '^layer \|^checked$' "$tmp/oci-check.out" || true
failures=$((failures + $(grep -c '^FAIL: ' "$tmp/oci-check.out" || true)))
grep -qx checked "$tmp/oci-check.out" || fail "image: the layout could not be read (see above)"

while read -r _ arch layer; do
    listing="$(tar -tvzf "$layer" --numeric-owner --full-time 2>&1 || true)"
    echo "$arch layer: $listing"
    expect "image: $arch layer holds exactly one file, $NAME" equals "$(tar -tzf "$layer" 2>&1 || true)" "$NAME"
    # -rwxr-xr-x 0/0 SIZE DATE TIME NAME
    read -r mode owner _ <<<"$listing"
    expect "image: $arch file is mode 0755, owner 0:0 ($mode $owner)" equals "$mode $owner" "-rwxr-xr-x 0/0"
    mtime="$(python3 -c 'import sys, tarfile; print(tarfile.open(sys.argv[1]).getmembers()[0].mtime)' "$layer" 2>&1 || true)"
    expect "image: $arch file's mtime is the image's epoch ($mtime)" equals "$mtime" "$epoch"
    expect "image: $arch file is byte for byte $NAME-linux-$arch" \
        cmp -s <(tar -xOzf "$layer" "$NAME") "$assets/$NAME-linux-$arch"
done < <(grep '^layer ' "$tmp/oci-check.out")

if scripts/image.sh --no-build --out "$tmp/oci-again" >/dev/null 2>&1; then
    expect "image: a second run writes the same bytes (reproducible)" diff -r "$oci" "$tmp/oci-again"
else
    fail "image: second run of scripts/image.sh"
fi

if skopeo copy --quiet --all "oci:$oci:$version" "oci:$tmp/skopeo:$version" >"$tmp/skopeo.out" 2>&1; then
    pass "image: skopeo copies the multi-arch index with every blob (digests checked)"
else
    indent <"$tmp/skopeo.out"
    fail "image: skopeo copy --all oci:$oci:$version"
fi

# ---- the amd64 rootfs in the empty-root test of static-checks.sh --------------------------

echo "==== empty root: the image's amd64 rootfs (umoci unpack) + /busybox + TLS files; mutual-TLS etcd"
bundle="$tmp/bundle"
if umoci unpack --image "$oci:$version-amd64" "$bundle" >"$tmp/umoci.out" 2>&1; then
    pass "image: umoci unpacks $version-amd64"
else
    indent <"$tmp/umoci.out"
    fail "image: umoci unpack $version-amd64"
fi
root="$bundle/rootfs"
echo "rootfs from the image: $(cd "$root" 2>/dev/null && find . -mindepth 1 | sort | paste -sd ' ')"
# What a runtime would run: the process args umoci derived from the image config.
mapfile -t entry < <(python3 -c 'import json, sys; print("\n".join(json.load(open(sys.argv[1]))["process"]["args"]))' \
    "$bundle/config.json" 2>/dev/null || true)
expect "image: the runtime's process args are the entrypoint (${entry[*]-none})" equals "${entry[*]-}" "/$NAME"
mkdir -p "$root/tls"
cp /usr/bin/busybox "$root/busybox"
cp "$pki/ca.pem" "$pki/client.pem" "$pki/client.key" "$root/tls/"
lock="eae-ship-root-$$"
rc=0
# A scratch container's environment: nothing but our variables (no PATH, no HOME).
# shellcheck disable=SC2016 # for the child's shell (the key's name: see the arm64 check)
env -i \
    ETCD_AWAIT_ELECTION_LOCK_NAME="$lock" \
    ETCD_AWAIT_ELECTION_IDENTITY=image-root \
    ETCD_AWAIT_ELECTION_ENDPOINTS="$etcd_url" \
    ETCD_AWAIT_ELECTION_CACERT=/tls/ca.pem \
    ETCD_AWAIT_ELECTION_CERT=/tls/client.pem \
    ETCD_AWAIT_ELECTION_KEY=/tls/client.key \
    "$(command -v timeout)" 30 "$(command -v chroot)" "$root" \
    "${entry[@]:-/$NAME}" /busybox sh -c 'echo "led ${ETCD_AWAIT_ELECTION_LEADER_KEY:-$ETCD_AWAIT_ELECTION_KEY}"; exit 7' \
    </dev/null >"$tmp/root.out" 2>"$tmp/root.err" || rc=$?
echo "exit code $rc; stdout: $(cat "$tmp/root.out"); wrapper log:"
indent <"$tmp/root.err"
expect "empty root (image): won the election over mutual TLS and ran /busybox sh" \
    grep -Eq "^led $lock/[0-9a-f]+\$" "$tmp/root.out"
expect "empty root (image): exit code $rc, expected 7" test "$rc" -eq 7
left="$(keys_left "$lock")"
expect "empty root (image): no key left under $lock/ (left: '${left}')" empty "$left"

# ---- 4. examples and Dockerfiles -------------------------------------------------------------

echo "==== examples/kubernetes/deployment.yaml"
python3 - examples/kubernetes/deployment.yaml <<'PY' >"$tmp/k8s.out" 2>&1 || true
import re, sys, yaml

path = sys.argv[1]
text = open(path).read()
ok, quiet = True, False
def check(cond, msg):
    global ok
    if not (cond and quiet):
        print(("PASS: " if cond else "FAIL: ") + "deployment.yaml: " + msg)
    ok = ok and cond
    return cond

# The variant: lines between "# BEGIN variant" and "# END variant", each "<indent># <yaml>".
def enable_variant(text):
    out, inside = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# BEGIN variant"):
            inside = True
        elif stripped.startswith("# END variant"):
            inside = False
        elif inside:
            m = re.match(r"^(\s*)# (.*)$", line)
            if not m:
                raise ValueError(f"variant line is not '# <yaml>': {line!r}")
            line = m.group(1) + m.group(2)
        out.append(line)
    return "\n".join(out) + "\n"

KNOWN = {"LOCK_NAME", "IDENTITY", "ENDPOINTS", "LEASE_DURATION", "RENEW_DEADLINE", "RETRY_PERIOD",
         "STATUS_ENDPOINT", "CACERT", "CERT", "KEY", "USERNAME", "PASSWORD", "USERNAME_FILE",
         "PASSWORD_FILE", "FORCE_ACQUIRE", "ACQUIRE_TIMEOUT", "LOG_FORMAT", "RECAMPAIGN", "HOLDERS"}
PREFIX = "ETCD_AWAIT_ELECTION_"

def seconds(value):
    value = str(value)
    return float(value[:-1]) if value.endswith("s") else float(value)

def examine(doc, label):
    check(doc.get("apiVersion") == "apps/v1" and doc.get("kind") == "Deployment", f"{label}: an apps/v1 Deployment")
    spec = doc["spec"]
    check(spec.get("replicas") == 2, f"{label}: two replicas")
    tmpl = spec["template"]
    labels = tmpl["metadata"]["labels"]
    check(all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()),
          f"{label}: the selector matches the pod labels")
    ru = spec.get("strategy", {}).get("rollingUpdate", {})
    check(ru.get("maxUnavailable") == 0 and ru.get("maxSurge") == 1, f"{label}: rolling update maxSurge 1, maxUnavailable 0")
    pod = tmpl["spec"]
    (c,) = pod["containers"]
    check(c["command"][0].endswith("/etcd-await-election") and c["command"][1:] == ["--"] and c.get("args"),
          f"{label}: the container runs etcd-await-election -- <app>")
    env, bad = {}, []
    for e in c["env"]:
        known = e["name"].startswith(PREFIX) and e["name"][len(PREFIX):] in KNOWN
        # Kubernetes takes only strings as values: 15 must be written "15".
        one_source = ("value" in e) != ("valueFrom" in e) and isinstance(e.get("value", ""), str)
        if not (known and one_source):
            bad.append(e["name"])
        env[e["name"][len(PREFIX):]] = e
    check(not bad, f"{label}: all {len(env)} env entries are the tool's variables, each with a string value or a valueFrom (bad: {bad or 'none'})")
    for name in ("LOCK_NAME", "ENDPOINTS"):
        check(bool(env.get(name, {}).get("value")), f"{label}: {name} is set")
    check(env.get("IDENTITY", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name",
          f"{label}: IDENTITY from fieldRef metadata.name")
    lease, renew, retry = (seconds(env[n]["value"]) for n in ("LEASE_DURATION", "RENEW_DEADLINE", "RETRY_PERIOD"))
    check(lease > renew > retry > 0, f"{label}: LEASE_DURATION > RENEW_DEADLINE > RETRY_PERIOD")
    check(pod.get("terminationGracePeriodSeconds", 30) > renew, f"{label}: terminationGracePeriodSeconds above RENEW_DEADLINE")
    # Each file variable names a file of a mounted Secret (its items).
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    files = {}
    for v in pod.get("volumes", []):
        if "secret" in v and v["name"] in mounts:
            for item in v["secret"].get("items", []):
                files[mounts[v["name"]]["mountPath"].rstrip("/") + "/" + item["path"]] = v["secret"]["secretName"]
    for name in ("CACERT", "CERT", "KEY", "USERNAME_FILE", "PASSWORD_FILE"):
        if name in env:
            check(env[name].get("value") in files, f"{label}: {name}={env[name].get('value')} is a file of a mounted Secret")
    check(all(m.get("readOnly") for m in mounts.values()), f"{label}: the Secrets are mounted read-only")
    port = env.get("STATUS_ENDPOINT", {}).get("value", "")
    check(re.fullmatch(r"[^:]*:\d+", port or "") is not None, f"{label}: STATUS_ENDPOINT {port!r} is [host]:port")
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    for probe in ("livenessProbe", "readinessProbe"):
        get = c.get(probe, {}).get("httpGet", {})
        p = ports.get(get.get("port"), get.get("port"))
        check(get.get("path") == "/healthz" and str(p) == port.rsplit(":", 1)[-1],
              f"{label}: {probe} is GET /healthz on the status port ({get.get('path')} port {p})")
    return env

docs = list(yaml.safe_load_all(text))
check(len(docs) == 1, "one document")
base = examine(docs[0], "as shipped")
check({"CERT", "KEY"} <= set(base) and not {"USERNAME_FILE", "PASSWORD_FILE"} & set(base), "as shipped: client certificate, no password")
(variant,) = list(yaml.safe_load_all(enable_variant(text)))
quiet = True  # the same checks again: failures only
venv = examine(variant, "variant")
quiet = False
check(ok, "variant: parses and passes the same checks")
check({"USERNAME_FILE", "PASSWORD_FILE"} <= set(venv), "variant: USERNAME_FILE and PASSWORD_FILE from the etcd-auth Secret")
print("checked")
sys.exit(0 if ok else 1)
PY
grep -vx checked "$tmp/k8s.out" || true
grep -qx checked "$tmp/k8s.out" || fail "deployment.yaml could not be checked (see above)"
failures=$((failures + $(grep -c '^FAIL: ' "$tmp/k8s.out" || true)))

echo "==== examples/systemd/billing-cron.service"
unit=examples/systemd/billing-cron.service
python3 - "$unit" examples/systemd/billing-cron.env <<'PY' >"$tmp/unit.out" 2>&1 || true
import re, sys

unit_path, env_path = sys.argv[1], sys.argv[2]
ok = True
def check(cond, msg):
    global ok
    print(("PASS: " if cond else "FAIL: ") + "billing-cron.service: " + msg)
    ok = ok and cond

# systemd's syntax: [Section], Key=Value, # or ; comments, backslash continuations, repeated keys.
sections, section, pending = {}, None, ""
for raw in open(unit_path):
    line = raw.rstrip("\n")
    if pending:
        line, pending = pending + line, ""
    if line.endswith("\\"):
        pending = line[:-1] + " "
        continue
    s = line.strip()
    if not s or s[0] in "#;":
        continue
    m = re.fullmatch(r"\[([A-Za-z]+)\]", s)
    if m:
        section = sections.setdefault(m.group(1), {})
        continue
    key, sep, value = s.partition("=")
    if not (sep and section is not None and re.fullmatch(r"[A-Za-z]+", key.strip())):
        check(False, f"line parses: {s!r}")
        continue
    section.setdefault(key.strip(), []).append(value.strip())

svc = sections.get("Service", {})
one = lambda k: (svc.get(k) or [""])[-1]
check(set(sections) == {"Unit", "Service", "Install"}, f"parses: sections Unit, Service, Install, {sum(map(len, svc.values()))} settings in [Service]")
check(one("ExecStart").split()[0].endswith("/etcd-await-election"), "ExecStart runs etcd-await-election")
check(one("Restart") == "on-failure", "Restart=on-failure")
check({"64", "78"} <= set(one("RestartPreventExitStatus").split()), "RestartPreventExitStatus has 64 and 78")
check(one("KillMode") == "mixed", "KillMode=mixed")
check(bool(svc.get("EnvironmentFile")), "an EnvironmentFile")
env = {}
for raw in open(env_path):
    s = raw.strip()
    if s and not s.startswith("#"):
        k, _, v = s.partition("=")
        env[k] = v
known = {"LOCK_NAME", "IDENTITY", "ENDPOINTS", "LEASE_DURATION", "RENEW_DEADLINE", "RETRY_PERIOD",
         "STATUS_ENDPOINT", "CACERT", "CERT", "KEY", "USERNAME", "PASSWORD", "USERNAME_FILE",
         "PASSWORD_FILE", "FORCE_ACQUIRE", "ACQUIRE_TIMEOUT", "LOG_FORMAT", "RECAMPAIGN", "HOLDERS"}
check(all(k.startswith("ETCD_AWAIT_ELECTION_") and k[20:] in known for k in env), f"the environment file sets only the tool's variables ({sorted(env)})")
lease = float(env.get("ETCD_AWAIT_ELECTION_LEASE_DURATION", "15"))
renew = float(env.get("ETCD_AWAIT_ELECTION_RENEW_DEADLINE", "10"))
stop = one("TimeoutStopSec")
stop_s = float(stop[:-1]) if stop.endswith("s") else float(stop or 0)
check(stop_s > renew and stop_s > (renew + lease) / 2,
      f"TimeoutStopSec={stop} above RENEW_DEADLINE ({renew:g} s) and (RENEW_DEADLINE + LEASE_DURATION) / 2 ({(renew + lease) / 2:g} s)")
print("checked")
sys.exit(0 if ok else 1)
PY
grep -vx checked "$tmp/unit.out" || true
grep -qx checked "$tmp/unit.out" || fail "billing-cron.service could not be checked (see above)"
failures=$((failures + $(grep -c '^FAIL: ' "$tmp/unit.out" || true)))
if command -v systemd-analyze >/dev/null 2>&1; then
    # verify needs ExecStart's program to exist: the released binary stands in for the installed one.
    mkdir -p "$tmp/units"
    sed "s#^ExecStart=/usr/local/bin/$NAME #ExecStart=$assets/$NAME-linux-amd64 #" "$unit" >"$tmp/units/billing-cron.service"
    verify_rc=0
    systemd-analyze verify "$tmp/units/billing-cron.service" >"$tmp/verify.out" 2>&1 || verify_rc=$?
    indent <"$tmp/verify.out"
    # It warns about unknown keys and bad values but still exits 0: any output is a failure.
    expect "billing-cron.service: systemd-analyze verify is silent and exits 0" \
        equals "$verify_rc:$(cat "$tmp/verify.out")" "0:"
else
    echo "systemd-analyze not found: the unit was parsed only (above)"
fi

echo "==== Dockerfiles"
python3 - Dockerfile.scratch examples/kubernetes/Dockerfile.app "$tmp/docker" <<'PY' >"$tmp/docker.out" 2>&1 || true
import json, os, re, subprocess, sys

scratch_path, app_path, work = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(work, exist_ok=True)
ok = True
def check(cond, msg):
    global ok
    print(("PASS: " if cond else "FAIL: ") + msg)
    ok = ok and cond
    return cond

KEYWORDS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
            "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}

def instructions(path):
    """(keyword, arguments) per instruction: Docker's line continuations, comments dropped (also
    inside a continuation, as Docker does)."""
    out, pending = [], None
    for raw in open(path):
        line = raw.rstrip("\n")
        if line.strip().startswith("#"):
            continue
        if not line.strip() and pending is None:
            continue
        # Docker drops the backslash and the line break: the lines join with nothing between.
        text = line if pending is None else pending + line
        if text.endswith("\\"):
            pending = text[:-1]
            continue
        pending = None
        keyword, _, args = text.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
    if pending is not None:
        out.append(("<unterminated>", pending))
    return out

def stages(path, label):
    ins = instructions(path)
    check(all(k in KEYWORDS for k, _ in ins), f"{label}: every instruction is a Dockerfile keyword ({sorted({k for k, _ in ins} - KEYWORDS) or 'ok'})")
    check(bool(ins) and ins[0][0] in ("FROM", "ARG"), f"{label}: starts with FROM")
    result, names = [], set()
    for k, a in ins:
        if k == "FROM":
            words = [w for w in a.split() if not w.startswith("--platform=")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            check(len(words) in (1, 3), f"{label}: FROM {a} is 'image [AS name]'")
            result.append({"image": words[0], "name": name, "ins": []})
            if name:
                names.add(name)
        else:
            result[-1]["ins"].append((k, a))
            if k == "COPY" and "--from=" in a:
                src = re.search(r"--from=(\S+)", a).group(1)
                check(src in names, f"{label}: COPY --from={src} names an earlier stage")
        if k in ("ENTRYPOINT", "CMD"):
            try:
                form = json.loads(a)
                check(isinstance(form, list) and all(isinstance(x, str) for x in form), f"{label}: {k} {a} is an exec-form JSON array")
            except ValueError:
                check(False, f"{label}: {k} {a} is an exec-form JSON array")
    return result

app = stages(app_path, "Dockerfile.app")
check(dict(app[-1]["ins"]).get("ENTRYPOINT", "").startswith('["/usr/local/bin/etcd-await-election", "--"'),
      "Dockerfile.app: ENTRYPOINT is the wrapper, then --")

sc = stages(scratch_path, "Dockerfile.scratch")
final = sc[-1]
check(final["image"] == "scratch", "Dockerfile.scratch: the image is FROM scratch")
check(json.loads(dict(final["ins"]).get("ENTRYPOINT", "null")) == ["/etcd-await-election"],
      "Dockerfile.scratch: ENTRYPOINT [\"/etcd-await-election\"], as scripts/image.sh")
build = sc[0]
args = {a.split("=")[0] for k, a in build["ins"] if k == "ARG"}
check({"TARGETARCH", "BUILDARCH"} <= args, "Dockerfile.scratch: the build stage declares TARGETARCH and BUILDARCH")
runs = [a for k, a in build["ins"] if k == "RUN"]
for i, body in enumerate(runs):
    r = subprocess.run(["sh", "-n", "-c", body], capture_output=True, text=True)
    check(r.returncode == 0, f"Dockerfile.scratch: RUN #{i + 1} is valid sh ({r.stderr.strip() or 'ok'})")
(mapping,) = [b for b in runs if "> eae-build.env" in b]
cases = {("amd64", "amd64"): ("x86_64-unknown-linux-musl", "musl-gcc", "musl-tools"),
         ("arm64", "arm64"): ("aarch64-unknown-linux-musl", "musl-gcc", "musl-tools"),
         ("amd64", "arm64"): ("aarch64-unknown-linux-musl", "aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu libc6-dev-arm64-cross"),
         ("arm64", "amd64"): ("x86_64-unknown-linux-musl", "x86-64-linux-gnu-gcc", "gcc-x86-64-linux-gnu libc6-dev-amd64-cross")}
for (builder, target), (rust, cc, pkgs) in cases.items():
    d = os.path.join(work, f"{builder}-{target}")
    os.makedirs(d, exist_ok=True)
    r = subprocess.run(["sh", "-c", mapping], cwd=d, capture_output=True, text=True,
                       env={"PATH": os.environ["PATH"], "BUILDARCH": builder, "TARGETARCH": target})
    env = subprocess.run(["sh", "-c", ". ./eae-build.env && echo \"$EAE_RUST_TARGET|$EAE_PACKAGES|$(env | grep -E '^(CC|AR|CARGO_TARGET)_' | sort | tr '\\n' ' ')\""],
                         cwd=d, capture_output=True, text=True).stdout.strip() if r.returncode == 0 else ""
    got_rust, got_pkgs, exported = (env.split("|") + ["", "", ""])[:3]
    var = rust.replace("-", "_")
    check(r.returncode == 0 and got_rust == rust and got_pkgs == pkgs and f"CC_{var}={cc}" in exported
          and f"CARGO_TARGET_{var.upper()}_LINKER=" in exported,
          f"Dockerfile.scratch: builder {builder}, TARGETARCH {target} -> {rust}, CC {cc}, packages {pkgs} ({env or r.stderr.strip()})")
r = subprocess.run(["sh", "-c", mapping], cwd=work, capture_output=True, text=True,
                   env={"PATH": os.environ["PATH"], "BUILDARCH": "amd64", "TARGETARCH": "riscv64"})
check(r.returncode != 0 and "riscv64" in r.stderr, f"Dockerfile.scratch: TARGETARCH riscv64 is refused ({r.stderr.strip()})")
print("crossenv " + os.path.join(work, "amd64-arm64", "eae-build.env"))
print("checked")
sys.exit(0 if ok else 1)
PY
grep -v '^crossenv \|^checked$' "$tmp/docker.out" || true
grep -qx checked "$tmp/docker.out" || fail "the Dockerfiles could not be checked (see above)"
failures=$((failures + $(grep -c '^FAIL: ' "$tmp/docker.out" || true)))
# Dockerfile.scratch's cross build step, run here with its own environment file (amd64 builder,
# arm64 target): the same binary as release.sh's (same flags, so cargo finds it up to date).
crossenv="$(sed -n 's/^crossenv //p' "$tmp/docker.out")"
if [[ -f "$crossenv" ]] && (
    # shellcheck disable=SC1090 # generated by Dockerfile.scratch's mapping step
    . "$crossenv"
    cargo build --locked --release --target "$EAE_RUST_TARGET" --quiet &&
        cmp -s "${CARGO_TARGET_DIR:-target}/$EAE_RUST_TARGET/release/$NAME" "$assets/$NAME-linux-arm64"
) >"$tmp/cross.out" 2>&1; then
    pass "Dockerfile.scratch: its arm64 cross build, run here, gives the released arm64 binary"
else
    indent <"$tmp/cross.out"
    fail "Dockerfile.scratch: its arm64 cross build, run here, differs from the released arm64 binary"
fi

echo
echo "ship checks took $((SECONDS - started)) s"
if ((failures)); then
    echo "ship checks: $failures FAILED"
    exit 1
fi
echo "ship checks: all passed"
