#!/usr/bin/env bash
# Writes the multi-arch FROM-scratch image (linux/amd64 + linux/arm64) as an OCI image layout,
# by hand (tar, gzip, sha256sum and JSON): no container engine, no daemon, no registry.
#
#   scripts/image.sh [--out DIR] [--no-build]
#
#   --out DIR    where the layout goes (default: target/image/oci, under CARGO_TARGET_DIR when set);
#                the directory is replaced as a whole
#   --no-build   take the binaries from target/release-assets as they are (default: run
#                scripts/release.sh first, which builds them, or finds them up to date)
#
# Each architecture's image is one layer holding one file, /etcd-await-election (mode 0755, owner
# 0:0, mtime = SOURCE_DATE_EPOCH or else the commit time of HEAD), and a config whose entrypoint is
# that file. The layout's index.json names:
#   <version>          an image index of both architectures (what a registry serves as multi-arch)
#   <version>-amd64    the linux/amd64 image alone
#   <version>-arm64    the linux/arm64 image alone
# Same binaries and same epoch ⇒ the same bytes and digests (gzip -n stores no name or time).
#
# To publish (where skopeo and a registry are at hand):
#   skopeo copy --all oci:target/image/oci:<version> docker://REGISTRY/etcd-await-election:<version>
# Prints the layout's directory on the last line of stdout (`image: DIR`).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly NAME=etcd-await-election
readonly ENTRYPOINT="/$NAME"
readonly MT_INDEX=application/vnd.oci.image.index.v1+json
readonly MT_MANIFEST=application/vnd.oci.image.manifest.v1+json
readonly MT_CONFIG=application/vnd.oci.image.config.v1+json
readonly MT_LAYER=application/vnd.oci.image.layer.v1.tar+gzip

target_dir="${CARGO_TARGET_DIR:-target}"
out="$target_dir/image/oci"
build=1
while (($#)); do
    case "$1" in
    --out)
        [[ $# -ge 2 && -n "$2" ]] || {
            echo "image: --out needs a directory" >&2
            exit 64
        }
        out="$2"
        shift 2
        ;;
    --no-build)
        build=0
        shift
        ;;
    *)
        echo "image: unknown argument '$1' (usage: scripts/image.sh [--out DIR] [--no-build])" >&2
        exit 64
        ;;
    esac
done

if ((build)); then
    scripts/release.sh
fi
assets="$target_dir/release-assets"
for arch in amd64 arm64; do
    [[ -x "$assets/$NAME-linux-$arch" ]] || {
        echo "image: $assets/$NAME-linux-$arch is missing (run scripts/release.sh)" >&2
        exit 1
    }
done

version="$(sed -n 's/^version *= *"\(.*\)"/\1/p' Cargo.toml | sed -n 1p)"
revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [[ -n "${SOURCE_DATE_EPOCH:-}" ]]; then
    epoch="$SOURCE_DATE_EPOCH"
else
    epoch="$(git log -1 --format=%ct HEAD 2>/dev/null || echo 0)"
fi
[[ "$epoch" =~ ^[0-9]+$ ]] || {
    echo "image: SOURCE_DATE_EPOCH='$epoch' is not a number of seconds" >&2
    exit 64
}
created="$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"

mkdir -p "$(dirname "$out")"
work="$(mktemp -d "$(dirname "$out")/.oci.XXXXXX")"
trap 'rm -rf "$work"' EXIT
layout="$work/layout"
mkdir -p "$layout/blobs/sha256" "$work/stage"

# put_blob FILE: moves FILE into the layout under its digest; sets blob_digest and blob_size.
put_blob() {
    local hex
    hex="$(sha256sum "$1" | cut -d' ' -f1)"
    blob_digest="sha256:$hex"
    blob_size="$(stat -c %s "$1")"
    mv "$1" "$layout/blobs/sha256/$hex"
}
# descriptor MEDIA_TYPE [EXTRA_JSON_MEMBERS]: the JSON descriptor of the last put_blob.
descriptor() {
    printf '{"mediaType":"%s","digest":"%s","size":%s%s}' "$1" "$blob_digest" "$blob_size" "${2:+,$2}"
}

annotations="\"org.opencontainers.image.title\":\"$NAME\",\"org.opencontainers.image.version\":\"$version\",\"org.opencontainers.image.revision\":\"$revision\",\"org.opencontainers.image.created\":\"$created\",\"org.opencontainers.image.licenses\":\"Apache-2.0\""

platform_entries=()
arch_entries=()
for arch in amd64 arm64; do
    platform="\"architecture\":\"$arch\",\"os\":\"linux\""
    [[ $arch == arm64 ]] && platform+=",\"variant\":\"v8\""

    # The layer: one file, no directory entries, numeric owner 0:0, fixed mode and mtime (ustar
    # has no atime/ctime fields to vary).
    rm -rf "$work/stage" && mkdir "$work/stage"
    install -m 0755 "$assets/$NAME-linux-$arch" "$work/stage/$NAME"
    tar --create --format=ustar --numeric-owner --owner=0 --group=0 --mode=0755 \
        --mtime="@$epoch" -C "$work/stage" -f "$work/layer.tar" "$NAME"
    diff_id="sha256:$(sha256sum "$work/layer.tar" | cut -d' ' -f1)"
    gzip -n -9 <"$work/layer.tar" >"$work/layer.tar.gz"
    rm "$work/layer.tar"
    put_blob "$work/layer.tar.gz"
    layer="$(descriptor "$MT_LAYER")"

    printf '{"created":"%s",%s,"config":{"Entrypoint":["%s"],"Labels":{%s}},"rootfs":{"type":"layers","diff_ids":["%s"]},"history":[{"created":"%s","created_by":"scripts/image.sh: %s-linux-%s as %s"}]}' \
        "$created" "$platform" "$ENTRYPOINT" "$annotations" "$diff_id" "$created" "$NAME" "$arch" "$ENTRYPOINT" \
        >"$work/config.json"
    put_blob "$work/config.json"
    config="$(descriptor "$MT_CONFIG")"

    printf '{"schemaVersion":2,"mediaType":"%s","config":%s,"layers":[%s],"annotations":{%s}}' \
        "$MT_MANIFEST" "$config" "$layer" "$annotations" >"$work/manifest.json"
    put_blob "$work/manifest.json"
    platform_entries+=("$(descriptor "$MT_MANIFEST" "\"platform\":{$platform}")")
    arch_entries+=("$(descriptor "$MT_MANIFEST" "\"platform\":{$platform},\"annotations\":{\"org.opencontainers.image.ref.name\":\"$version-$arch\"}")")
done

join() { local IFS=,; echo "$*"; }
printf '{"schemaVersion":2,"mediaType":"%s","manifests":[%s],"annotations":{%s}}' \
    "$MT_INDEX" "$(join "${platform_entries[@]}")" "$annotations" >"$work/index.json"
put_blob "$work/index.json"
multi="$(descriptor "$MT_INDEX" "\"annotations\":{\"org.opencontainers.image.ref.name\":\"$version\"}")"

printf '{"schemaVersion":2,"mediaType":"%s","manifests":[%s]}\n' \
    "$MT_INDEX" "$(join "$multi" "${arch_entries[@]}")" >"$layout/index.json"
printf '{"imageLayoutVersion":"1.0.0"}\n' >"$layout/oci-layout"

rm -rf "$out"
mv "$layout" "$out"

echo "==== OCI layout $out (tag $version: linux/amd64 + linux/arm64, created $created)"
(cd "$out/blobs/sha256" && for blob in *; do printf '%9d  sha256:%s\n' "$(stat -c %s "$blob")" "$blob"; done)
echo "total blobs: $(find "$out/blobs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }') bytes"
echo "index: $multi"
echo "image: $(cd "$out" && pwd)"
