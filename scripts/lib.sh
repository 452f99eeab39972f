# shellcheck shell=bash
# Helpers shared by the scripts (sourced, never run). Debian 12, as root, no stdin.

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }

# Installs the Debian packages that are missing. When etcd-server is one of them, the packaged
# service is stopped and disabled: every script starts its own etcd on free ports, and a stray
# server on 2379 only costs memory and CPU.
ensure_packages() {
    local missing=() pkg
    for pkg in "$@"; do installed "$pkg" || missing+=("$pkg"); done
    ((${#missing[@]})) || return 0
    echo "installing: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    if [[ " ${missing[*]} " == *" etcd-server "* ]]; then
        systemctl disable --now etcd 2>/dev/null || true
        if [[ -x /etc/init.d/etcd ]]; then
            /etc/init.d/etcd stop >/dev/null 2>&1 || true
            update-rc.d etcd disable >/dev/null 2>&1 || true
        fi
    fi
}

# A loopback port nothing listens on now, below the kernel's ephemeral range: on a busy machine
# thousands of client sockets sit in TIME_WAIT on ephemeral ports, and a listener cannot bind one
# of those (seen here: 21,800 TIME_WAIT, three etcd starts in a row failing). Callers retry if
# another process binds it first.
free_port() {
    local low p
    low="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
    ((low > 12000)) || low=32768
    while :; do
        p=$((10000 + RANDOM % (low - 10000)))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            echo "$p"
            return
        fi
    done
}
