#!/usr/bin/env python3
"""Chaos test behind scripts/chaos.sh (Python 3.11 standard library only).

Runs five etcd-await-election candidates on one lock against a 3-member etcd cluster on loopback,
injects faults at random for SECONDS, then checks what the candidates' commands did:

  - no two commands ever ran at once (overlapping intervals), and no grandchild of a command
    (see "grandchildren" below) was alive once a later command had started,
  - no command outlived its wrapper (alive more than GRACE after the wrapper's exit was observed),
    and no grandchild either, except setsid'd ones after a SIGKILL of the wrapper (the documented
    limit: only the command's process group dies with a SIGKILL'd wrapper; they are counted),
  - no lease is left in etcd once every wrapper has exited and LEASE_DURATION + 1 s have passed,
  - fencing tokens (ETCD_AWAIT_ELECTION_LEADER_REVISION) never go backwards from one command to the next,
  - no wrapper logged "leadership lost" (its key or lease vanished under a running command: with
    no FORCE_ACQUIRE, the lease expired while the command still ran, which the renew deadline
    exists to prevent) -- except the wrapper whose key the driver deleted on purpose, for that
    deletion ("our key was deleted", logged after it),
  - a deliberately preempted command (and its grandchildren) stopped within PREEMPT_BOUND of the
    deletion of its key, watch frozen or not (keepalive interval 0.5 s + unary budget 1 s + margin),
  - no command was started on a lapsed renewal: "renew deadline passed" logged within 5 ms of
    "child started" means the last acknowledged keepalive was already about RENEW_DEADLINE old
    when the command started (or older: then the lease may already have expired on the server,
    its key only waiting for etcd's lessor to revoke it).

The commands (a small bash script, CHILD below) append `start <ns> <identity> <pid> <ppid> <rev>
<key>` and `end <ns> <identity> <pid> <why>` to one shared log (O_APPEND, one write per line;
CLOCK_REALTIME from bash's $EPOCHREALTIME, no fork). A command killed by SIGKILL cannot write its
end, so a monitor thread polls every known command's and wrapper's pid every ~5 ms and appends
`gone <ns> <pid>` the first time it finds it dead (missing, zombie, or its pid reused). The monitor
also tails every wrapper's log for `child started pid=N`, so a command killed before it could
write its start is still watched (for the wrappers whose stderr may stall, whose log lines may
come late or never, it also reads the wrapper's /proc children list every poll). For the checks:

  - a command's interval starts at min(its recorded start, its wrapper's `child started` log time
    rounded down to the ms, the poll that discovered it) and ends at min(its recorded end, first
    `gone`, its wrapper's `child exited|stopped` log time + 1 ms, which is logged after waitpid
    reaped it, the kernel's exit time); without an end record it ends at the first observation
    of its death (late: in favour of finding overlaps). An overlap is "certain" when the next command started before the
    end record (or before the last poll that saw the first one alive), "possible" when it started
    between that poll and the observed death. Both fail the run.
  - "outlived its wrapper" needs a poll that saw the command alive (timestamp taken before the
    look) more than GRACE after a poll that saw the wrapper dead (timestamp taken after the look),
    so monitor lag never makes a false positive.

Grandchildren: 60% of the commands (seeded) start a grandchild (GRANDCHILD below) that
ignores SIGTERM, writes `gstart <ns> <identity> <pid> <command pid> <kind>`, then `alive <ns>
<identity> <pid>` every 20-50 ms, and `gend` if it reaches its planned end (0.1 s to the command's
length + 2 s, so it often outlives the command unless the wrapper kills it). Kind `setsid` leaves
the command's session and process group (util-linux setsid), kind `group` stays in it. The monitor
polls them like commands; their interval ends at min(gend, gone, the kernel's exit time), and an
`alive` record is proof of life like a poll. setsid'd ones that survive a SIGKILL of their wrapper are killed by the
driver 1 s after that exit was seen (and by the cleanup).

Faults (seeded; --seed replays the same sequence of choices, not the same timing):

  - SIGKILL or SIGTERM of a wrapper (half the time the leader's), and a SIGKILL of the leader's
    wrapper 0.2-1 s after 30% of the commands that start a grandchild;
  - SIGKILL of an etcd member (half the time the raft leader) restarted on the same data dir 0.5-3 s
    later (never two members down at once);
  - a freeze of the whole cluster (SIGSTOP to every running member) for 2.2-2.8 s (past the renew
    deadline, not the lease TTL) or 3-4.5 s (past both), at most one per 7 s: at random, and (60%
    of the time) just after a command started that plans to outlive RENEW_DEADLINE, so that the
    renew deadline has to stop it (during a freeze the leader's wrapper is not signalled);
  - a stalled stderr: the wrappers in slots PIPED_SLOTS write stderr into a pipe that a driver
    thread copies into their log files; a stall stops reading it and fills what is left of the
    pipe (with filler lines the reader discards: the wrapper alone logs too little to fill 64 KiB
    in seconds), so the wrapper's next write blocks: for 1-6 s at random, and (50% of the time)
    from just after its command started until 0.5-3 s after that command's planned end, so that
    the end, the revocation and the exit (with its bounded flush) all meet a blocked stderr. Its
    log lines are then late, or lost (dropped by its full queue, or still queued when it exits):
    the checks use the commands' own records, the monitor's polls and the kernel's exit times,
    never a wrapper's log line alone, for those wrappers;
  - a frozen watch flow: the wrappers in slots PROXIED_SLOTS reach every member through a TCP
    proxy (threads here); a freeze holds every proxied connection that carries a watch (its
    request starts with `POST /v3/watch`; the wrapper opens a connection per watch) for 2-8 s, in
    both directions, while unary calls (keepalives, transactions, ranges) pass;
  - a preemption: `etcdctl del` of the running leader's key (the key its command got). 40% of the
    proxied commands that plan to run 1.5 s or more, and 75% of the random watch freezes that
    find a proxied leader, get a watch freeze and the deletion of their key 0.2-0.8 s into it, the
    freeze lasting past the bound, so that only the leader's once-per-keepalive-interval re-read
    can notice; the "preempt" fault deletes the key of whichever leader runs, watch live. Either
    way the new leader may start at once while the old command is still being killed: that
    overlap (and only that: a later command starting after the deletion began) is excluded from
    the overlap check and reported as "preemption overlap". No other fault is injected from the
    deletion until the preempted command and its grandchildren are gone (3 s at most).

Wrappers that exit are restarted with the same identity after 0.05-1 s (after a SIGKILL: seamless
takeover).

Exit times: with the kernel's proc connector (netlink, root) every exit is stamped by the kernel,
and the checks end an interval there when that is the earliest bound (a poll sees a SIGKILL late:
by a poll period, or a GIL wait). Without it (reported), a "possible" overlap whose only end
bound is a poll is a warning, not a failure.

Every process runs in its own session, whose id is appended to --registry; cleanup kills every
process of those sessions (commands in their own process groups and orphans included) and of the
sessions the setsid'd grandchildren made, also on Ctrl-C, SIGTERM and errors, then empties the
registry. --save copies the logs and a merged timeline.txt there. Exit status: 0 PASS, 1 FAIL,
2 harness error, 130 interrupted.
"""

import argparse
import base64
import calendar
import collections
import errno
import http.client
import json
import os
import random
import re
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import traceback

from harness_common import Processes, b64, prefix_end, proc_stat_fields

LOCK = "chaos"
CANDIDATES = 5
LEASE_DURATION = 3  # s
RENEW_DEADLINE = 2  # s
RETRY_PERIOD = "500ms"
MS = 1_000_000
GRACE_NS = 100 * MS  # a command may outlive its wrapper's observed exit by this much
# "renew deadline passed" this soon after "child started": the command started on a lapsed renewal
STALE_NS = 5 * MS
POLL_S = 0.005  # monitor period
HEARTBEAT_MS = 100
ELECTION_MS = 1000
# Wrappers whose stderr goes through a pipe the driver may stall, and wrappers that reach etcd
# through the proxy whose watch flows the driver may freeze (slot 1 gets both; 3 and 4 neither).
PIPED_SLOTS = (0, 1)
PROXIED_SLOTS = (1, 2)
# A deliberately preempted command must be gone this soon after its key's deletion began: the
# leader's keepalive interval (min(RETRY_PERIOD, LEASE_DURATION / 3) = 0.5 s) + one unary call's
# budget (max(that interval, 1 s) = 1 s) + 0.5 s for etcdctl's start, SIGKILL and the monitor.
PREEMPT_BOUND_NS = 2_000 * MS
# After a preemption no other fault until the preempted command is gone, at most this long.
PREEMPT_QUIET_S = 3.0
SURVIVOR_KILL_S = 1.0  # setsid'd survivors of a wrapper SIGKILL are killed this long after it
FILL = b"\x1e"  # filler lines are made of this byte only

CHILD = r"""#!/bin/bash
# The chaos test's command: records its start and end in $CHAOS_LOG, one write per line; may start
# a grandchild that ignores SIGTERM, setsid'd (its own session and group) or in our group.
now() { local t=${EPOCHREALTIME/[.,]/}; REPLY="${t}000"; }
ended() {
    now
    printf 'end %s %s %s %s\n' "$REPLY" "$ETCD_AWAIT_ELECTION_IDENTITY" "$$" "$1" >>"$CHAOS_LOG"
}
trap 'ended TERM; exit 143' TERM
now
printf 'start %s %s %s %s %s %s\n' "$REPLY" "$ETCD_AWAIT_ELECTION_IDENTITY" "$$" "$PPID" \
    "${ETCD_AWAIT_ELECTION_LEADER_REVISION:-?}" "${ETCD_AWAIT_ELECTION_LEADER_KEY:-?}" >>"$CHAOS_LOG"
case ${CHAOS_GC_KIND:-} in
setsid)
    setsid /bin/bash "$CHAOS_GC_SCRIPT" setsid "$$" "$CHAOS_GC_MS" "$CHAOS_GC_SEED" \
        </dev/null >/dev/null 2>&1 &
    ;;
group)
    /bin/bash "$CHAOS_GC_SCRIPT" group "$$" "$CHAOS_GC_MS" "$CHAOS_GC_SEED" </dev/null >/dev/null 2>&1 &
    ;;
esac
sleep "$CHAOS_CHILD_SECONDS" &
wait $!
ended done
exit 0
"""

GRANDCHILD = r"""#!/bin/bash
# The chaos test's grandchild: KIND PARENT MS SEED. Ignores SIGTERM (only SIGKILL stops it),
# records its start, then `alive` every 20-50 ms, and its end if it lives MS ms. No fork: the
# pauses are reads that time out on a FIFO nobody writes.
trap '' TERM
now() { local t=${EPOCHREALTIME/[.,]/}; REPLY="${t}000"; }
exec 3<>"$CHAOS_FIFO" 4>>"$CHAOS_LOG"
RANDOM=$4
now
printf 'gstart %s %s %s %s %s\n' "$REPLY" "$ETCD_AWAIT_ELECTION_IDENTITY" "$$" "$2" "$1" >&4
end=$((REPLY + $3 * 1000000))
while now && ((REPLY < end)); do
    printf 'alive %s %s %s\n' "$REPLY" "$ETCD_AWAIT_ELECTION_IDENTITY" "$$" >&4
    read -r -t "0.0$((20 + RANDOM % 31))" -u 3 _ || true
done
now
printf 'gend %s %s %s\n' "$REPLY" "$ETCD_AWAIT_ELECTION_IDENTITY" "$$" >&4
"""


class HarnessError(Exception):
    pass


class Interrupted(Exception):
    pass


def now_ns():
    return time.time_ns()


T0 = now_ns()


def rel(ns):
    return f"+{(ns - T0) / 1e9:8.3f}s"


def say(message):
    print(f"[{rel(now_ns())}] {message}", flush=True)


def proc_stat(pid):
    """(state, ppid, starttime) of a live or zombie process, None when it does not exist."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    try:
        fields = data[data.rindex(b")") + 2 :].split()
        return fields[0].decode(), int(fields[1]), int(fields[19])
    except (ValueError, IndexError):
        return None


def proc_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def proc_comm(pid):
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            return f.read().strip()
    except OSError:
        return b""


LOG_TS = re.compile(rb"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{3})Z ")


def log_ts_ns(line):
    """The RFC 3339 UTC timestamp (ms) at the start of a wrapper log line, in ns; None if absent."""
    m = LOG_TS.match(line)
    if not m:
        return None
    y, mo, d, h, mi, s, ms = (int(x) for x in m.groups())
    secs = calendar.timegm((y, mo, d, h, mi, s, 0, 0, 0))
    return secs * 1_000_000_000 + ms * MS


# ---------------------------------------------------------------------------------------------
# processes


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
    env["LC_ALL"] = "C"
    if extra:
        env.update(extra)
    return env


def free_ports(n):
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def http_json(port, path, payload=None, timeout=1.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        if payload is None:
            conn.request("GET", path)
        else:
            conn.request(
                "POST", path, body=json.dumps(payload), headers={"Content-Type": "application/json"}
            )
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise HarnessError(f"{path}: HTTP {response.status}: {data[:200]!r}")
        return json.loads(data)
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# etcd


class Member:
    def __init__(self, index, tmp):
        self.index = index
        self.name = f"m{index}"
        self.dir = os.path.join(tmp, f"etcd-{self.name}")
        self.log_path = os.path.join(tmp, f"etcd-{self.name}.log")
        self.client_port = None
        self.peer_port = None
        self.proc = None
        self.state = "down"  # down | starting | up
        self.restart_at = None  # monotonic
        self.frozen = False
        self.member_id = None

    @property
    def url(self):
        return f"http://127.0.0.1:{self.client_port}"

    def healthy(self, timeout=0.5):
        try:
            return http_json(self.client_port, "/health", timeout=timeout).get("health") == "true"
        except (OSError, http.client.HTTPException, ValueError, HarnessError):
            return False


class Cluster:
    def __init__(self, procs, tmp):
        self.procs = procs
        self.tmp = tmp
        self.members = [Member(i, tmp) for i in range(3)]
        self.initial = None

    @property
    def endpoints(self):
        return ",".join(m.url for m in self.members)

    def argv(self, m):
        return [
            "etcd",
            "--name", m.name,
            "--data-dir", os.path.join(m.dir, "data"),
            "--listen-client-urls", m.url,
            "--advertise-client-urls", m.url,
            "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-cluster", self.initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", "eae-chaos",
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_MS),
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "info",
        ]  # fmt: skip

    def spawn(self, m):
        os.makedirs(m.dir, exist_ok=True)
        m.proc = self.procs.spawn(self.argv(m), clean_env(), m.log_path)
        m.state = "starting"
        m.frozen = False

    def start(self):
        for attempt in range(1, 4):
            ports = free_ports(6)
            for i, m in enumerate(self.members):
                m.client_port, m.peer_port = ports[2 * i], ports[2 * i + 1]
                m.dir = os.path.join(self.tmp, f"etcd-{m.name}-{attempt}")
            self.initial = ",".join(
                f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members
            )
            for m in self.members:
                self.spawn(m)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if any(m.proc.poll() is not None for m in self.members):
                    break
                if all(m.healthy() for m in self.members):
                    for m in self.members:
                        m.state = "up"
                        m.member_id = http_json(m.client_port, "/v3/maintenance/status", {})[
                            "header"
                        ]["member_id"]
                    return
                time.sleep(0.1)
            say(f"etcd cluster start attempt {attempt} failed; retrying on other ports")
            for m in self.members:
                self.kill(m, signal.SIGKILL)
        raise HarnessError("the etcd cluster did not start (see etcd-m*.log)")

    def kill(self, m, sig):
        if m.proc is None:
            return
        try:
            os.kill(m.proc.pid, sig)
        except ProcessLookupError:
            pass
        if m.frozen:
            try:
                os.kill(m.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        try:
            m.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(m.proc.pid, signal.SIGKILL)
            m.proc.wait()
        m.proc = None
        m.state = "down"
        m.frozen = False

    def raft_leader(self):
        """Index of the member that says it leads (asked with a short timeout), or None."""
        for m in self.members:
            if m.state != "up" or m.frozen:
                continue
            try:
                status = http_json(m.client_port, "/v3/maintenance/status", {}, timeout=0.3)
            except (OSError, http.client.HTTPException, ValueError, HarnessError):
                continue
            leader = status.get("leader")
            for other in self.members:
                if other.member_id == leader:
                    return other.index
            return None
        return None

    def any_up(self):
        return [m for m in self.members if m.state == "up" and not m.frozen]

    def post(self, path, payload, timeout=2.0):
        errors = []
        for m in self.any_up() or self.members:
            try:
                return http_json(m.client_port, path, payload, timeout=timeout)
            except (OSError, http.client.HTTPException, ValueError, HarnessError) as e:
                errors.append(f"{m.name}: {e}")
        raise HarnessError(f"{path} failed on every member: {'; '.join(errors)}")

    def leases(self):
        answer = self.post("/v3/lease/leases", {})
        return sorted(int(item["ID"]) for item in answer.get("leases", []))

    def lease_ttl(self, lease):
        try:
            answer = self.post("/v3/lease/timetolive", {"ID": str(lease)})
            return int(answer.get("TTL", -1)), int(answer.get("grantedTTL", 0))
        except HarnessError:
            return None, None

    def keys(self):
        prefix = LOCK + "/"
        answer = self.post("/v3/kv/range", {"key": b64(prefix), "range_end": b64(prefix_end(prefix))})
        return [
            (base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")).decode())
            for kv in answer.get("kvs", [])
        ]


# ---------------------------------------------------------------------------------------------
# kernel exit times


class ExitWatcher(threading.Thread):
    """The kernel's exit time of every process (the netlink proc connector, root only): a poll sees
    a death up to a poll period (or a GIL wait) late, the kernel stamps it in do_exit. Without the
    connector (no permission, not the initial network namespace) deaths are known from polls only.
    Exit events of the thread group leader only; lost ones (a full socket buffer) are counted."""

    NETLINK_CONNECTOR = 11
    CN_IDX_PROC = 1
    CN_VAL_PROC = 1
    PROC_CN_MCAST_LISTEN = 1
    PROC_EVENT_EXIT = 0x80000000
    EVENT_AT = 16 + 20  # nlmsghdr, cn_msg

    def __init__(self):
        super().__init__(name="exits", daemon=True)
        self.lock = threading.Lock()
        self.exits = collections.defaultdict(list)  # pid -> [realtime ns of its exits]
        self.sock = None
        self.unavailable = None
        self.events = 0
        self.overruns = 0
        self.error = None

    def open(self):
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, self.NETLINK_CONNECTOR)
        except OSError as e:
            self.unavailable = f"netlink connector socket: {e}"
            return False
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
            sock.bind((0, self.CN_IDX_PROC))
            op = struct.pack("=I", self.PROC_CN_MCAST_LISTEN)
            cn = struct.pack("=IIIIHH", self.CN_IDX_PROC, self.CN_VAL_PROC, 0, 0, len(op), 0) + op
            sock.send(struct.pack("=IHHII", 16 + len(cn), 3, 0, 0, 0) + cn)  # NLMSG_DONE
            sock.settimeout(2)
            if not self.probe(sock):
                raise OSError("no exit event for a process of ours within 2 s")
        except OSError as e:
            self.unavailable = f"proc connector: {e}"
            sock.close()
            return False
        sock.settimeout(None)
        self.sock = sock
        return True

    def probe(self, sock):
        """Whether the exit of a short process of ours is reported (events do arrive here)."""
        proc = subprocess.Popen(["/bin/true"])
        proc.wait()
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            self.take(sock.recv(65536))
            if self.exit_after(proc.pid, 0) is not None:
                return True
        return False

    def take(self, data):
        if len(data) < self.EVENT_AT + 16 + 8:
            return
        what, _cpu, ts = struct.unpack_from("=IIQ", data, self.EVENT_AT)
        if what != self.PROC_EVENT_EXIT:
            return
        pid, tgid = struct.unpack_from("=II", data, self.EVENT_AT + 16)
        if pid != tgid:
            return
        # timestamp_ns is CLOCK_MONOTONIC (ktime_get_ns); Python's monotonic clock is the same
        realtime = ts + time.time_ns() - time.monotonic_ns()
        with self.lock:
            self.events += 1
            self.exits[pid].append(realtime)

    def run(self):
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except OSError as e:
                    if e.errno == errno.ENOBUFS:
                        self.overruns += 1
                        continue
                    return  # closed
                self.take(data)
        except Exception as e:
            self.error = traceback.format_exc()
            raise e

    def exit_after(self, pid, after_ns):
        """The first exit of `pid` at or after `after_ns` (its start: an earlier process with the
        same pid does not count), None if none was reported."""
        with self.lock:
            for t in self.exits.get(pid, ()):
                if t >= after_ns:
                    return t
        return None

    def stop(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------------------------
# stalled stderr


def fill_pipe(fd):
    """Fills the pipe behind the non-blocking `fd` to its last byte with filler lines; returns how
    many bytes that took. (Writes of at most PIPE_BUF bytes are all or nothing, so after the
    2-byte round no write of a log line fits.)"""
    total = 0
    for size in (4096, 512, 64, 8, 2):
        chunk = FILL * (size - 1) + b"\n"
        while True:
            try:
                total += os.write(fd, chunk)
            except BlockingIOError:
                break
    return total


def writing(pid):
    """Whether a thread of `pid` sleeps in a pipe write (its log writer, on a stalled stderr)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                if "pipe_write" in f.read():
                    return True
        except OSError:
            pass
    return False


class Pipe:
    """One wrapper's stderr: the read end the pump copies to the log, and a second, non-blocking
    file description of the write end (opened through /proc, so the wrapper's stays blocking) for
    the filler."""

    def __init__(self, label, read_fd, filler_fd, log_fd):
        self.label = label
        self.read_fd = read_fd
        self.filler_fd = filler_fd
        self.log_fd = log_fd
        self.buf = b""
        self.registered = False
        self.stalled_until = None  # monotonic; set by the driver, ended by the pump
        self.stall_start_ns = None
        self.stall_filled = 0
        self.stall_leading = False
        self.stalls = []  # (start_ns, end_ns, filled bytes, under a running command)
        self.pid = None  # the wrapper's, once it runs
        self.blocked_stalls = 0  # stalls that ended with a thread of the wrapper blocked in write
        self.retire_at = None  # monotonic: drain and close then (the wrapper exited)
        self.closed_ns = None
        self.held_lines = 0  # lines stamped during a stall that came out after it
        self.dropped_notes = 0
        self.dropped_lines = 0


class StderrPipes(threading.Thread):
    """Copies the piped wrappers' stderr into their log files (dropping filler lines), and stalls
    one on demand: it stops reading that pipe, which the driver fills, until the stall ends."""

    DROPPED = re.compile(rb"log lines were dropped.* count=(\d+)")

    def __init__(self):
        super().__init__(name="stderr-pipes", daemon=True)
        self.lock = threading.Lock()
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)
        self.pipes = []
        self.stop_event = threading.Event()
        self.error = None

    def open(self, label, log_path):
        """A new pipe for a wrapper: returns it and the write end to give the wrapper as stderr
        (the caller closes that once the wrapper has it)."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        filler_fd = os.open(f"/proc/self/fd/{write_fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        pipe = Pipe(label, read_fd, filler_fd, log_fd)
        with self.lock:
            self.pipes.append(pipe)
        self.wake()
        return pipe, write_fd

    def wake(self):
        try:
            os.write(self.wake_w, b"x")
        except BlockingIOError:
            pass

    def stall(self, pipe, seconds, leading):
        """Stops reading `pipe` for `seconds` and fills it; the bytes filled, or None when it is
        closed or already stalled."""
        with self.lock:
            if pipe.closed_ns is not None or pipe.stalled_until is not None:
                return None
            pipe.stalled_until = time.monotonic() + seconds
            pipe.stall_start_ns = now_ns()
            pipe.stall_leading = leading
            pipe.stall_filled = fill_pipe(pipe.filler_fd)
            filled = pipe.stall_filled
        self.wake()
        return filled

    def stalled(self, pipe):
        with self.lock:
            return pipe.stalled_until is not None

    def retire(self, pipe, delay):
        """The wrapper exited: drain and close `pipe` after `delay` (once no stall holds it)."""
        with self.lock:
            if pipe.retire_at is None:
                pipe.retire_at = time.monotonic() + delay
        self.wake()

    def heal(self):
        """Ends every stall now."""
        with self.lock:
            t = time.monotonic()
            for pipe in self.pipes:
                if pipe.stalled_until is not None:
                    pipe.stalled_until = t
        self.wake()

    def open_pipes(self):
        with self.lock:
            return [p for p in self.pipes if p.closed_ns is None]

    def run(self):
        try:
            while not self.stop_event.is_set():
                events = self.sel.select(0.05)
                with self.lock:
                    self.housekeeping()
                    for key, _ in events:
                        if key.data is None:
                            try:
                                os.read(self.wake_r, 4096)
                            except BlockingIOError:
                                pass
                            continue
                        pipe = key.data
                        if pipe.stalled_until is None and pipe.closed_ns is None:
                            self.read(pipe)
        except Exception as e:  # the driver must hear of it
            self.error = traceback.format_exc()
            raise e

    def housekeeping(self):
        """Ends stalls that are due, (un)registers pipes, closes retired ones. Lock held."""
        t = time.monotonic()
        for pipe in self.pipes:
            if pipe.closed_ns is not None:
                continue
            if pipe.stalled_until is not None and t >= pipe.stalled_until:
                pipe.stalls.append(
                    (pipe.stall_start_ns, now_ns(), pipe.stall_filled, pipe.stall_leading))
                pipe.stalled_until = None
                if pipe.pid is not None and writing(pipe.pid):
                    pipe.blocked_stalls += 1
            want = pipe.stalled_until is None
            if want and not pipe.registered:
                self.sel.register(pipe.read_fd, selectors.EVENT_READ, pipe)
                pipe.registered = True
            elif not want and pipe.registered:
                self.sel.unregister(pipe.read_fd)
                pipe.registered = False
            if pipe.retire_at is not None and t >= pipe.retire_at and pipe.stalled_until is None:
                self.read(pipe)
                if pipe.buf:
                    os.write(pipe.log_fd, pipe.buf)
                if pipe.registered:
                    self.sel.unregister(pipe.read_fd)
                    pipe.registered = False
                for fd in (pipe.read_fd, pipe.filler_fd, pipe.log_fd):
                    os.close(fd)
                pipe.closed_ns = now_ns()

    def read(self, pipe):
        """Copies what the pipe holds to the log, whole lines, without the filler. Lock held."""
        while True:
            try:
                chunk = os.read(pipe.read_fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            pipe.buf += chunk
        if b"\n" not in pipe.buf:
            return
        *lines, pipe.buf = pipe.buf.split(b"\n")
        kept = []
        for line in lines:
            if not line.strip(FILL):
                continue
            ts = log_ts_ns(line)
            if ts is not None and any(s - MS <= ts <= e for s, e, _, _ in pipe.stalls[-3:]):
                pipe.held_lines += 1
            m = self.DROPPED.search(line)
            if m:
                pipe.dropped_notes += 1
                pipe.dropped_lines += int(m.group(1))
            kept.append(line + b"\n")
        if kept:
            os.write(pipe.log_fd, b"".join(kept))

    def stop(self):
        self.stop_event.set()
        self.join(timeout=5)


# ---------------------------------------------------------------------------------------------
# the proxy whose watch flows freeze


class ProxyConn:
    """One proxied connection: the client's socket and the member's."""

    def __init__(self, client, upstream, member):
        self.client = client
        self.upstream = upstream
        self.member = member
        self.head = b""
        self.kind = None  # "watch" | "unary", from the first request's bytes
        self.frozen_in = 0  # the last freeze that held this connection
        self.closed = False
        self.lock = threading.Lock()

    def close(self):
        with self.lock:
            if self.closed:
                return
            self.closed = True
        for sock in (self.client, self.upstream):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


class WatchProxy:
    """A TCP proxy in front of every member (one listening port each, threads, two per
    connection). A freeze holds every connection that carries a watch: nothing goes through it in
    either direction, not even its end, until the thaw; every other connection passes."""

    def __init__(self, members):
        self.members = members
        self.cond = threading.Condition()
        self.frozen = False
        self.freeze_no = 0
        self.closing = False
        self.listeners = []
        self.ports = []
        self.conns = set()
        self.counts = collections.Counter()  # watch, unary, refused
        self.freeze_start_ns = None
        self.freeze_held = 0
        self.freezes = []  # (start_ns, end_ns, watch connections held)

    @property
    def endpoints(self):
        return ",".join(f"http://127.0.0.1:{port}" for port in self.ports)

    def start(self):
        for m in self.members:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", 0))
            s.listen(64)
            self.listeners.append(s)
            self.ports.append(s.getsockname()[1])
            threading.Thread(target=self.accept_loop, args=(s, m), name=f"proxy-{m.name}",
                             daemon=True).start()

    def accept_loop(self, listener, member):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.closing:
                client.close()
                return
            threading.Thread(target=self.serve, args=(client, member), daemon=True).start()

    def serve(self, client, member):
        try:
            upstream = socket.create_connection(("127.0.0.1", member.client_port), timeout=2)
        except OSError:
            with self.cond:
                self.counts["refused"] += 1
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = ProxyConn(client, upstream, member)
        with self.cond:
            if self.closing:
                conn.close()
                return
            self.conns.add(conn)
        threading.Thread(target=self.pump, args=(conn, upstream, client, False),
                         daemon=True).start()
        self.pump(conn, client, upstream, True)

    def pump(self, conn, src, dst, from_client):
        try:
            while True:
                try:
                    data = src.recv(65536)
                except OSError:
                    data = b""
                if from_client and conn.kind is None:
                    self.classify(conn, data)
                if conn.kind == "watch":
                    self.hold(conn)
                if not data:
                    return
                try:
                    dst.sendall(data)
                except OSError:
                    return
        finally:
            conn.close()
            with self.cond:
                self.conns.discard(conn)

    def classify(self, conn, data):
        conn.head += data[:64]
        if conn.head.startswith(b"POST /v3/watch"):
            kind = "watch"
        elif len(conn.head) >= 16 or not data:
            kind = "unary"
        else:
            return
        with self.cond:
            conn.kind = kind
            self.counts[kind] += 1
            if kind == "watch" and self.frozen:
                conn.frozen_in = self.freeze_no
                self.freeze_held += 1

    def hold(self, conn):
        """Waits while a freeze is on (a watch connection only)."""
        with self.cond:
            while self.frozen and not self.closing:
                if conn.frozen_in != self.freeze_no:
                    conn.frozen_in = self.freeze_no
                    self.freeze_held += 1
                self.cond.wait(1.0)

    def freeze(self):
        with self.cond:
            self.frozen = True
            self.freeze_no += 1
            self.freeze_start_ns = now_ns()
            # every open watch connection is held from now on, whether it has bytes to pass or not
            live = [c for c in self.conns if c.kind == "watch" and not c.closed]
            for c in live:
                c.frozen_in = self.freeze_no
            self.freeze_held = len(live)
            return len(live)

    def thaw(self):
        with self.cond:
            if not self.frozen:
                return None
            self.frozen = False
            self.freezes.append((self.freeze_start_ns, now_ns(), self.freeze_held))
            self.cond.notify_all()
            return self.freeze_held

    def stop(self):
        self.thaw()
        with self.cond:
            self.closing = True
            conns = list(self.conns)
            self.cond.notify_all()
        for s in self.listeners:
            try:
                s.close()
            except OSError:
                pass
        for c in conns:
            c.close()


# ---------------------------------------------------------------------------------------------
# records


class Wrapper:
    def __init__(self, number, slot, identity, proc, log_path, child_seconds, pipe=None,
                 proxied=False, grandchild=None):
        self.number = number
        self.slot = slot
        self.identity = identity
        self.proc = proc
        self.pid = proc.pid
        self.log_path = log_path
        self.child_seconds = child_seconds
        self.spawn_ns = now_ns()
        st = proc_stat(self.pid)
        self.starttime = st[2] if st else None
        self.gone_ns = None  # monitor: first poll that found it dead (taken after the look)
        self.exit_seen_ns = None  # driver: poll() returned
        self.rc = None
        self.signals = []  # (ns, name) sent by the driver
        self.log_offset = 0
        self.log_buf = b""
        self.final_term = False
        self.pipe = pipe  # Pipe when its stderr goes through a pipe the driver may stall
        self.proxied = proxied  # its endpoints are the proxy's
        self.grandchild = grandchild  # (kind, ms) its command's grandchild, or None
        self.known_pids = set()  # children of a piped wrapper already looked at
        self.exited_stalled = False

    @property
    def label(self):
        return f"{self.identity}#{self.number} (pid {self.pid})"

    @property
    def exit_ns(self):
        seen = [t for t in (self.gone_ns, self.exit_seen_ns) if t is not None]
        return min(seen) if seen else None

    @property
    def killed(self):
        return self.rc == -signal.SIGKILL

    def log_settled(self, t):
        """Whether its log can grow no more (read it until 2 s after that)."""
        if self.gone_ns is None:
            return False
        since = self.gone_ns
        if self.pipe is not None:
            if self.pipe.closed_ns is None:
                return False
            since = max(since, self.pipe.closed_ns)
        return t - since >= 2_000 * MS


class Child:
    def __init__(self, pid, wrapper):
        self.pid = pid
        self.wrapper = wrapper
        self.identity = wrapper.identity if wrapper else "?"
        self.start_ns = None  # recorded by the command
        self.end_ns = None  # recorded by the command
        self.end_why = None
        self.spawn_ns = None  # wrapper log "child started", rounded down to the ms
        self.revision = None
        self.starttime = None
        self.first_seen_ns = None
        self.last_alive_ns = None  # a poll saw it alive at or after this time
        self.gone_ns = None  # a poll found it dead at or before this time
        self.reaped_ns = None  # its wrapper logged "child exited/stopped" (reaped) before this
        self.discovered_ns = None  # a poll found it among its piped wrapper's children then
        self.exit_ns = None  # the kernel's exit time (filled in by the checks)
        self.key = None
        self.bad_identity = False
        self.grandchildren = []

    @property
    def eff_start(self):
        known = [t for t in (self.start_ns, self.spawn_ns, self.discovered_ns) if t is not None]
        return min(known) if known else None

    def end_bounds(self):
        return [(self.end_ns, "end record"), (self.gone_ns, "poll"), (self.reaped_ns, "reaped log"),
                (self.exit_ns, "kernel exit")]

    @property
    def eff_end(self):
        known = [t for t, _ in self.end_bounds() if t is not None]
        return min(known) if known else None

    @property
    def end_source(self):
        known = [(t, src) for t, src in self.end_bounds() if t is not None]
        return min(known)[1] if known else None

    @property
    def certain_end(self):
        """A time at which the command certainly still existed."""
        if self.end_ns is not None:
            return self.end_ns
        if self.last_alive_ns is not None:
            return self.last_alive_ns
        return self.eff_start

    @property
    def label(self):
        w = f"{self.wrapper.identity}#{self.wrapper.number}" if self.wrapper else self.identity
        return f"{w} child pid {self.pid} rev {self.revision}"


class Grandchild:
    """A process the command started that ignores SIGTERM and records itself (GRANDCHILD)."""

    def __init__(self, pid, parent, identity, kind, start_ns):
        self.pid = pid
        self.parent = parent  # the Child that started it, None if unknown
        self.identity = identity
        self.kind = kind  # setsid | group
        self.start_ns = start_ns
        self.end_ns = None  # gend: it reached its planned end
        self.alive_ns = None  # its last `alive` record
        self.last_polled_ns = None  # a poll saw it alive at or after this time
        self.gone_ns = None
        self.exit_ns = None  # the kernel's exit time (filled in by the checks)
        self.starttime = None
        self.sid = None
        self.killed_ns = None  # the driver SIGKILLed it (a survivor of a wrapper SIGKILL)

    @property
    def wrapper(self):
        return self.parent.wrapper if self.parent is not None else None

    @property
    def eff_start(self):
        return self.start_ns

    def end_bounds(self):
        return [(self.end_ns, "end record"), (self.gone_ns, "poll"), (self.exit_ns, "kernel exit")]

    @property
    def eff_end(self):
        known = [t for t, _ in self.end_bounds() if t is not None]
        return min(known) if known else None

    @property
    def end_source(self):
        known = [(t, src) for t, src in self.end_bounds() if t is not None]
        return min(known)[1] if known else None

    @property
    def last_alive_ns(self):
        known = [t for t in (self.alive_ns, self.last_polled_ns) if t is not None]
        return max(known) if known else None

    @property
    def certain_end(self):
        if self.end_ns is not None:
            return self.end_ns
        known = self.last_alive_ns
        return known if known is not None else self.start_ns

    @property
    def label(self):
        return f"{self.kind} grandchild pid {self.pid} of {self.parent.label if self.parent else '?'}"


# ---------------------------------------------------------------------------------------------
# monitor


class Monitor(threading.Thread):
    """Tails the shared log and the wrappers' logs; polls every command's, grandchild's and
    wrapper's pid, and the /proc children of the wrappers whose logs may stall."""

    CHILD_STARTED = re.compile(rb" child started pid=(\d+)")
    CHILD_REAPED = re.compile(rb" child (?:exited|stopped) pid=(\d+)")

    def __init__(self, log_path, child_script, grandchild_script, procs):
        super().__init__(name="monitor", daemon=True)
        self.log_path = log_path
        self.child_marker = os.path.basename(child_script).encode()
        self.grandchild_marker = os.path.basename(grandchild_script).encode()
        self.procs = procs
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.children = []  # every Child, in discovery order
        self.live_children = set()  # Children not yet gone
        self.grandchildren = []  # every Grandchild
        self.live_grandchildren = set()
        self.grandchild_by_pid = {}  # pid -> the latest Grandchild with that pid
        self.wrappers = []  # every Wrapper
        self.live_wrappers = {}  # pid -> Wrapper not yet gone
        self.wrapper_by_pid = {}  # pid -> the latest Wrapper with that pid
        self.log_fd = os.open(log_path, os.O_RDONLY | os.O_CREAT, 0o644)
        self.append_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
        self.buf = b""
        self.bad_lines = []
        self.error = None
        self.max_gap_s = 0.0

    def note(self, line):
        os.write(self.append_fd, (line + "\n").encode())

    def add_wrapper(self, w):
        with self.lock:
            self.wrappers.append(w)
            self.live_wrappers[w.pid] = w
            self.wrapper_by_pid[w.pid] = w
        self.note(f"wrapper {w.spawn_ns} {w.identity} {w.pid} #{w.number}")

    def run(self):
        last = time.monotonic()
        tick = 0
        try:
            while not self.stop_event.is_set():
                self.read_log()
                self.read_wrapper_logs()
                self.poll()
                tick += 1
                time.sleep(POLL_S)
                t = time.monotonic()
                self.max_gap_s = max(self.max_gap_s, t - last)
                last = t
            self.read_log()
            self.read_wrapper_logs(final=True)
            self.poll()
        except Exception as e:  # the checks must not silently lose their observer
            self.error = traceback.format_exc()
            raise e

    def stop(self):
        self.stop_event.set()
        self.join(timeout=5)

    # -- logs

    def read_log(self):
        while True:
            chunk = os.read(self.log_fd, 65536)
            if not chunk:
                break
            self.buf += chunk
        if b"\n" not in self.buf:
            return
        *lines, self.buf = self.buf.split(b"\n")
        for raw in lines:
            self.parse(raw.decode(errors="replace"))

    def parse(self, line):
        parts = line.split()
        if not parts:
            return
        kind = parts[0]
        try:
            if kind == "start":
                _, ns, identity, pid, ppid, revision, key = parts
                self.on_start(int(ns), identity, int(pid), int(ppid), revision, key)
            elif kind == "end":
                _, ns, identity, pid, why = parts
                self.on_end(int(ns), identity, int(pid), why)
            elif kind == "alive":
                _, ns, identity, pid = parts
                self.on_alive(int(ns), identity, int(pid), line)
            elif kind == "gstart":
                _, ns, identity, pid, parent, gkind = parts
                self.on_gstart(int(ns), identity, int(pid), int(parent), gkind)
            elif kind == "gend":
                _, ns, identity, pid = parts
                self.on_gend(int(ns), identity, int(pid), line)
            elif kind in ("gone", "wrapper", "wexit", "fault", "#"):
                pass
            else:
                self.bad_lines.append(line)
        except ValueError:
            self.bad_lines.append(line)

    def child_for(self, pid, wrapper, field):
        """The Child with this pid under this wrapper whose `field` is still unset (learnt from
        the other source first), or a new one. Called with the lock held."""
        for c in reversed(self.children[-50:]):
            if c.pid == pid and c.wrapper is wrapper and getattr(c, field) is None:
                return c
        c = Child(pid, wrapper)
        self.children.append(c)
        self.live_children.add(c)
        self.first_look(c)
        return c

    def on_start(self, ns, identity, pid, ppid, revision, key):
        with self.lock:
            wrapper = self.wrapper_by_pid.get(ppid)
            c = self.child_for(pid, wrapper, "start_ns")
            c.start_ns = ns
            c.identity = identity
            c.revision = int(revision) if revision.isdigit() else None
            c.key = key if key != "?" else None
            if wrapper is not None and wrapper.identity != identity:
                c.bad_identity = True

    def on_end(self, ns, identity, pid, why):
        with self.lock:
            for c in reversed(self.children):
                if c.pid == pid and c.end_ns is None:
                    c.end_ns = ns
                    c.end_why = why
                    return
        self.bad_lines.append(f"end without start: {ns} {identity} {pid} {why}")

    def on_gstart(self, ns, identity, pid, parent_pid, kind):
        with self.lock:
            parent = None
            for c in reversed(self.children):
                if c.pid == parent_pid and c.identity == identity:
                    parent = c
                    break
            g = Grandchild(pid, parent, identity, kind, ns)
            if parent is not None:
                parent.grandchildren.append(g)
            self.grandchildren.append(g)
            self.grandchild_by_pid[pid] = g
            self.live_grandchildren.add(g)
            t0 = now_ns()
            try:
                fields = proc_stat_fields(pid)
            except (OSError, ValueError, IndexError):
                fields = None
            t1 = now_ns()
            alive = (fields is not None and fields[0] not in ("Z", "X")
                     and self.grandchild_marker in proc_cmdline(pid))
            if not alive:
                self.gone(g, t1)
                return
            g.starttime = int(fields[19])
            g.sid = int(fields[3])
            g.last_polled_ns = t0
        if kind == "setsid" and g.sid == pid:
            self.procs.adopt(pid)

    def grandchild(self, pid, line):
        g = self.grandchild_by_pid.get(pid)
        if g is None:
            self.bad_lines.append(f"grandchild record before its gstart: {line}")
        return g

    def on_alive(self, ns, identity, pid, line):
        with self.lock:
            g = self.grandchild(pid, line)
            if g is not None and (g.alive_ns is None or ns > g.alive_ns):
                g.alive_ns = ns

    def on_gend(self, ns, identity, pid, line):
        with self.lock:
            g = self.grandchild(pid, line)
            if g is not None:
                g.end_ns = ns

    def read_wrapper_logs(self, final=False):
        t = now_ns()
        with self.lock:
            wrappers = [w for w in self.wrappers
                        if final or w.log_offset == 0 or not w.log_settled(t)]
        for w in wrappers:
            try:
                with open(w.log_path, "rb") as f:
                    f.seek(w.log_offset)
                    data = f.read()
            except OSError:
                continue
            if not data:
                continue
            w.log_offset += len(data)
            w.log_buf += data
            if b"\n" not in w.log_buf:
                continue
            *lines, w.log_buf = w.log_buf.split(b"\n")
            for line in lines:
                m = self.CHILD_STARTED.search(line)
                if m:
                    ts = log_ts_ns(line)
                    with self.lock:
                        c = self.child_for(int(m.group(1)), w, "spawn_ns")
                        c.spawn_ns = ts
                m = self.CHILD_REAPED.search(line)
                if m:
                    ts = log_ts_ns(line)
                    with self.lock:
                        c = self.child_for(int(m.group(1)), w, "reaped_ns")
                        # logged after waitpid returned; the timestamp is rounded down to the ms
                        c.reaped_ns = ts + MS if ts is not None else None

    # -- polling

    def first_look(self, c):
        """Called with the lock held when a command's pid is learnt."""
        t0 = now_ns()
        st = proc_stat(c.pid)
        t1 = now_ns()
        c.first_seen_ns = t0
        if st is None or st[0] in ("Z", "X") or self.child_marker not in proc_cmdline(c.pid):
            self.gone(c, t1)
            return
        c.starttime = st[2]
        c.last_alive_ns = t0

    def gone(self, c, ns):
        c.gone_ns = ns
        if isinstance(c, Grandchild):
            self.live_grandchildren.discard(c)
            if c.kind == "setsid" and c.sid == c.pid:
                self.procs.forget(c.pid)  # it forks nothing: its session is empty now
        else:
            self.live_children.discard(c)
        self.note(f"gone {ns} {c.pid}")

    def discover(self, w):
        """Commands among the /proc children of a piped wrapper (whose `child started` line may
        come late or never). Lock held."""
        try:
            with open(f"/proc/{w.pid}/task/{w.pid}/children") as f:
                pids = [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            return
        for pid in pids:
            if pid in w.known_pids:
                continue
            t0 = now_ns()
            cmdline = proc_cmdline(pid)
            if cmdline.startswith(b"/bin/bash\0") and self.child_marker in cmdline:
                w.known_pids.add(pid)
                c = self.child_for(pid, w, "discovered_ns")
                c.discovered_ns = t0
            elif cmdline and not cmdline.startswith(os.fsencode(w.proc.args[0]) + b"\0"):
                w.known_pids.add(pid)  # exec'd into something else: not the command
            elif proc_comm(pid) == b"eae-guardian":
                w.known_pids.add(pid)  # the command's guardian (a fork of the wrapper)
            # else: the command before its exec (a vfork of the wrapper): look again next poll

    def poll(self):
        with self.lock:
            for w in self.live_wrappers.values():
                if w.pipe is not None:
                    self.discover(w)
            for c in list(self.live_children):
                t0 = now_ns()
                st = proc_stat(c.pid)
                t1 = now_ns()
                if st is None or st[0] in ("Z", "X") or st[2] != c.starttime:
                    self.gone(c, t1)
                else:
                    c.last_alive_ns = t0
            for g in list(self.live_grandchildren):
                t0 = now_ns()
                st = proc_stat(g.pid)
                t1 = now_ns()
                if st is None or st[0] in ("Z", "X") or st[2] != g.starttime:
                    self.gone(g, t1)
                else:
                    g.last_polled_ns = t0
            for w in list(self.live_wrappers.values()):
                st = proc_stat(w.pid)
                t1 = now_ns()
                reused = w.starttime is not None and st is not None and st[2] != w.starttime
                if st is None or st[0] in ("Z", "X") or reused:
                    w.gone_ns = t1
                    self.live_wrappers.pop(w.pid, None)

    def running_children(self):
        with self.lock:
            return [c for c in self.children if c.gone_ns is None and c.end_ns is None]


# ---------------------------------------------------------------------------------------------
# the driver


class Preemption:
    """A deliberate deletion of the running leader's key with etcdctl."""

    def __init__(self, number, child, frozen, t0, proc, log_path):
        self.number = number
        self.child = child
        self.key = child.key
        self.frozen = frozen  # the proxy held every watch flow (the leader is proxied)
        self.t0 = t0  # just before etcdctl was started: the deletion came later
        self.t1 = None  # etcdctl had exited
        self.proc = proc
        self.log_path = log_path
        self.rc = None
        self.deleted = None  # how many keys etcdctl says it deleted

    @property
    def label(self):
        how = "watch frozen" if self.frozen else "watch live"
        return f"preemption #{self.number} ({how}) of {self.child.label}"


class Chaos:
    def __init__(self, args, procs):
        self.args = args
        self.procs = procs
        self.tmp = args.tmp
        self.seed = args.seed
        self.rng_faults = random.Random(f"{self.seed}/faults")
        self.rng_children = random.Random(f"{self.seed}/children")
        self.rng_restarts = random.Random(f"{self.seed}/restarts")
        self.cluster = Cluster(procs, self.tmp)
        self.log_path = os.path.join(self.tmp, "intervals.log")
        self.child_script = os.path.join(self.tmp, "chaos-child.sh")
        with open(self.child_script, "w") as f:
            f.write(CHILD)
        os.chmod(self.child_script, 0o755)
        self.grandchild_script = os.path.join(self.tmp, "chaos-grandchild.sh")
        with open(self.grandchild_script, "w") as f:
            f.write(GRANDCHILD)
        os.chmod(self.grandchild_script, 0o755)
        self.fifo = os.path.join(self.tmp, "chaos-pause.fifo")
        os.mkfifo(self.fifo)
        self.monitor = Monitor(self.log_path, self.child_script, self.grandchild_script, procs)
        self.pipes = StderrPipes()
        self.exits = ExitWatcher()
        self.proxy = None  # WatchProxy, once the cluster's ports are known
        self.watch_frozen_until = None
        self.preempt_at = None  # (monotonic, Child): a deletion planned under a watch freeze
        self.preemptions = []
        self.preempting = None  # the Preemption whose etcdctl still runs
        self.quiet_until = -1e9  # monotonic: no fault before (a preempted command is dying)
        self.kill_at = None  # (monotonic, Child): a SIGKILL of its wrapper while its grandchild runs
        self.slots = [None] * CANDIDATES
        self.restart_at = [None] * CANDIDATES
        self.numbers = 0
        self.faults = []  # (ns, kind, detail)
        self.fault_counts = collections.Counter()
        self.frozen_until = None
        self.frozen_members = []
        self.last_freeze_end = -1e9
        self.health_threads = []
        self.started_mono = None
        self.notes = []
        self.considered = set()

    # -- logging

    def fault(self, kind, detail):
        t = now_ns()
        self.faults.append((t, kind, detail))
        self.fault_counts[kind] += 1
        self.monitor.note(f"fault {t} {kind} {detail.replace(' ', '_')}")
        if not self.args.quiet:
            say(f"FAULT {kind}: {detail}")

    def event(self, kind, detail):
        t = now_ns()
        self.faults.append((t, kind, detail))
        self.monitor.note(f"fault {t} {kind} {detail.replace(' ', '_')}")
        if not self.args.quiet:
            say(f"      {kind}: {detail}")

    # -- candidates

    def spawn_wrapper(self, slot):
        self.numbers += 1
        number = self.numbers
        identity = f"cand-{slot}"
        child_seconds = round(self.rng_children.uniform(0.2, 3.0), 3)
        # a grandchild 60% of the time, setsid'd 60% of those; always the same draws
        with_grandchild = self.rng_children.random() < 0.6
        kind = "setsid" if self.rng_children.random() < 0.6 else "group"
        grandchild_ms = int(self.rng_children.uniform(0.1, child_seconds + 2.0) * 1000)
        grandchild_seed = self.rng_children.randrange(1, 32768)
        log_path = os.path.join(self.tmp, f"wrapper-{number:04d}-{identity}.log")
        proxied = slot in PROXIED_SLOTS
        variables = {
            "ETCD_AWAIT_ELECTION_LOCK_NAME": LOCK,
            "ETCD_AWAIT_ELECTION_IDENTITY": identity,
            "ETCD_AWAIT_ELECTION_ENDPOINTS": (
                self.proxy.endpoints if proxied else self.cluster.endpoints),
            "ETCD_AWAIT_ELECTION_LEASE_DURATION": str(LEASE_DURATION),
            "ETCD_AWAIT_ELECTION_RENEW_DEADLINE": str(RENEW_DEADLINE),
            "ETCD_AWAIT_ELECTION_RETRY_PERIOD": RETRY_PERIOD,
            "CHAOS_LOG": self.log_path,
            "CHAOS_CHILD_SECONDS": f"{child_seconds:.3f}",
            "CHAOS_GC_SCRIPT": self.grandchild_script,
            "CHAOS_FIFO": self.fifo,
        }
        grandchild = None
        if with_grandchild:
            grandchild = (kind, grandchild_ms)
            variables.update({"CHAOS_GC_KIND": kind, "CHAOS_GC_MS": str(grandchild_ms),
                              "CHAOS_GC_SEED": str(grandchild_seed)})
        env = clean_env(variables)
        pipe, stderr_fd = None, None
        if slot in PIPED_SLOTS:
            pipe, stderr_fd = self.pipes.open(f"{identity}#{number}", log_path)
        try:
            proc = self.procs.spawn([self.args.bin, "/bin/bash", self.child_script], env, log_path,
                                    stderr=stderr_fd)
        finally:
            if stderr_fd is not None:
                os.close(stderr_fd)
        if pipe is not None:
            pipe.pid = proc.pid
        w = Wrapper(number, slot, identity, proc, log_path, child_seconds, pipe=pipe,
                    proxied=proxied, grandchild=grandchild)
        self.monitor.add_wrapper(w)
        self.slots[slot] = w
        self.restart_at[slot] = None
        return w

    def reap_wrappers(self):
        for slot, w in enumerate(self.slots):
            if w is None or w.rc is not None:
                continue
            rc = w.proc.poll()
            if rc is None:
                continue
            w.rc = rc
            w.exit_seen_ns = now_ns()
            if w.pipe is not None:
                w.exited_stalled = self.pipes.stalled(w.pipe)
                self.pipes.retire(w.pipe, 1.0)
            self.monitor.note(f"wexit {w.exit_seen_ns} {w.identity} {w.pid} {rc}")
            if not self.args.quiet:
                say(f"      exit: {w.label} rc={describe_rc(rc)}")

    def leader_child(self):
        for c in self.monitor.running_children():
            if c.wrapper is not None and c.wrapper.rc is None:
                return c
        return None

    def leader_wrapper(self):
        c = self.leader_child()
        return c.wrapper if c is not None else None

    # -- stalled stderr, frozen watches, preemptions, grandchildren

    def stall_stderr(self):
        """Stops reading a piped wrapper's stderr for 1-6 s (half the time the leader's)."""
        live = [w for w in self.slots if w is not None and w.rc is None and w.pipe is not None
                and not self.pipes.stalled(w.pipe)]
        leader = self.leader_wrapper()
        to_leader = self.rng_faults.random() < 0.5
        pick = self.rng_faults.random()
        seconds = self.rng_faults.uniform(1.0, 6.0)
        if to_leader and leader is not None and any(w is leader for w in live):
            target = leader
        elif live:
            target = live[int(pick * len(live))]
        else:
            return False
        return self.stall_wrapper(target, seconds, "at random")

    def stall_wrapper(self, w, seconds, why):
        leading = w is self.leader_wrapper()
        filled = self.pipes.stall(w.pipe, seconds, leading)
        if filled is None:
            return False
        role = "leader" if leading else "waiter"
        self.fault("stderr-stall", f"{w.label} ({role}) for {seconds:.1f}s, {why} "
                                   f"({filled} filler bytes fill its pipe)")
        return True

    def cluster_healthy(self):
        return self.frozen_until is None and not self.members_down()

    def preemption_busy(self):
        """A preemption's etcdctl runs, or its command is still dying (no other fault then)."""
        if self.preempting is not None or self.preempt_at is not None:
            return True
        if time.monotonic() >= self.quiet_until or not self.preemptions:
            return False
        c = self.preemptions[-1].child
        return c.eff_end is None or any(g.eff_end is None for g in c.grandchildren)

    def freeze_watches(self, target=None):
        """Holds every watch flow through the proxy for 2-8 s; 75% of the time (always with a
        `target`), when the leader is proxied, deletes its key 0.2-0.8 s later (the freeze then
        lasts past the bound)."""
        if self.proxy.frozen or self.preemption_busy():
            return False
        seconds = self.rng_faults.uniform(2.0, 8.0)
        delay = self.rng_faults.uniform(0.2, 0.8)
        wants_preemption = self.rng_faults.random() < 0.75 or target is not None
        c = target or self.leader_child()
        plan = ""
        if (wants_preemption and c is not None and c.wrapper.proxied and c.key is not None
                and self.cluster_healthy()):
            seconds = max(seconds, delay + PREEMPT_BOUND_NS / 1e9 + 0.5)
            self.preempt_at = (time.monotonic() + delay, c)
            plan = f"; {c.wrapper.label}'s key goes in {delay:.1f}s"
        held = self.proxy.freeze()
        self.watch_frozen_until = time.monotonic() + seconds
        self.fault("watch-freeze", f"every watch flow through the proxy for {seconds:.1f}s "
                                   f"({held} open now){plan}")
        return True

    def thaw_watches(self, force=False):
        if self.watch_frozen_until is None:
            return
        if not force and time.monotonic() < self.watch_frozen_until:
            return
        held = self.proxy.thaw()
        self.watch_frozen_until = None
        self.event("watch-thaw", f"{held} watch connections were held")

    def preempt_leader(self):
        """The live-watch preemption: deletes whichever leader's key."""
        if self.proxy.frozen or self.preemption_busy() or not self.cluster_healthy():
            return False
        c = self.leader_child()
        if c is None or c.key is None:
            return False
        self.preempt(c)
        return True

    def preempt(self, c):
        number = len(self.preemptions) + 1
        log_path = os.path.join(self.tmp, f"etcdctl-{number:03d}.log")
        argv = ["etcdctl", f"--endpoints={self.cluster.endpoints}", "--dial-timeout=1s",
                "--command-timeout=2s", "del", c.key]
        frozen = self.proxy.frozen
        t0 = now_ns()
        proc = self.procs.spawn(argv, clean_env({"ETCDCTL_API": "3"}), log_path)
        p = Preemption(number, c, frozen, t0, proc, log_path)
        self.preemptions.append(p)
        self.preempting = p
        self.quiet_until = time.monotonic() + PREEMPT_QUIET_S
        kind = "preempt-watch-frozen" if frozen else "preempt-watch-live"
        self.fault(kind, f"etcdctl del {c.key} under {c.label}")

    def preemption_steps(self):
        if self.preempt_at is not None and time.monotonic() >= self.preempt_at[0]:
            c = self.preempt_at[1]
            self.preempt_at = None
            running = c.end_ns is None and c.gone_ns is None
            if running and self.proxy.frozen and self.cluster_healthy():
                self.preempt(c)
            else:
                self.event("preempt-skipped", f"{c.label}: no longer running, or the cluster or "
                                              "the watches changed meanwhile")
        p = self.preempting
        if p is not None and p.proc.poll() is not None:
            p.t1 = now_ns()
            p.rc = p.proc.returncode
            try:
                with open(p.log_path) as f:
                    out = f.read().strip()
            except OSError:
                out = ""
            p.deleted = int(out) if out.isdigit() else None
            self.preempting = None
            self.event("preempt-done", f"etcdctl rc {p.rc}, deleted {out!r} after "
                                       f"{(p.t1 - p.t0) / MS:.0f} ms")

    def kill_survivors(self, now_too=False):
        """SIGKILLs the setsid'd grandchildren that outlived their SIGKILL'd wrapper, once
        SURVIVOR_KILL_S has passed since its exit was seen (at once with `now_too`)."""
        t = now_ns()
        with self.monitor.lock:
            found = [g for g in self.monitor.live_grandchildren
                     if g.kind == "setsid" and g.killed_ns is None and g.wrapper is not None
                     and g.wrapper.killed and g.wrapper.exit_seen_ns is not None
                     and (now_too or t - g.wrapper.exit_seen_ns >= SURVIVOR_KILL_S * 1e9)]
        for g in found:
            st = proc_stat(g.pid)
            if st is None or st[2] != g.starttime:
                continue
            try:
                os.kill(g.pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            g.killed_ns = now_ns()
            self.event("survivor-kill", f"{g.label} outlived {g.wrapper.label}'s SIGKILL (the "
                                        "documented limit); SIGKILL")

    def signal_wrapper(self, sig):
        live = [w for w in self.slots if w is not None and w.rc is None]
        leader = self.leader_wrapper()
        to_leader = self.rng_faults.random() < 0.5
        pick = self.rng_faults.random()
        if self.frozen_until is not None and leader is not None:
            # during a freeze the leader is left alone: its renew deadline has to stop its command
            live = [w for w in live if w is not leader]
            to_leader = False
        if to_leader and leader is not None:
            target, role = leader, "leader"
        elif live:
            target = live[int(pick * len(live))]
            role = "leader" if target is leader else "waiter"
        else:
            return False
        name = signal.Signals(sig).name
        target.signals.append((now_ns(), name))
        try:
            os.kill(target.pid, sig)
        except ProcessLookupError:
            return False
        self.fault(f"wrapper-{name.lower()}", f"{target.label} ({role})")
        return True

    # -- etcd

    def members_down(self):
        return [m for m in self.cluster.members if m.state != "up"]

    def kill_member(self):
        if self.frozen_until is not None or self.members_down():
            return False
        to_leader = self.rng_faults.random() < 0.5
        pick = int(self.rng_faults.random() * 3)
        down_for = self.rng_faults.uniform(0.5, 3.0)
        index = self.cluster.raft_leader() if to_leader else None
        role = "raft leader"
        if index is None:
            index, role = pick, "member"
        m = self.cluster.members[index]
        self.cluster.kill(m, signal.SIGKILL)
        m.restart_at = time.monotonic() + down_for
        self.fault("etcd-kill", f"{m.name} ({role}) SIGKILL, restart in {down_for:.1f}s")
        return True

    def restart_members(self):
        for m in self.cluster.members:
            if m.state == "down" and m.restart_at is not None and time.monotonic() >= m.restart_at:
                if self.frozen_until is not None:
                    continue  # restarted after the freeze
                self.cluster.spawn(m)
                m.restart_at = None
                self.event("etcd-restart", f"{m.name} (same data dir)")
                thread = threading.Thread(target=self.await_health, args=(m, m.proc), daemon=True)
                thread.start()
                self.health_threads.append(thread)

    def await_health(self, m, proc):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and m.proc is proc:
            if m.frozen:
                time.sleep(0.05)
                continue
            if proc.poll() is not None:
                self.notes.append(f"{m.name} exited with {proc.returncode} after a restart")
                return
            if m.healthy(timeout=0.3):
                if m.proc is proc:
                    m.state = "up"
                return
            time.sleep(0.05)

    def freeze_allowed(self):
        return self.frozen_until is None and time.monotonic() - self.last_freeze_end >= 7

    def maybe_fault_new_leader(self):
        """Faults aimed at a command that just started: a cluster freeze when it plans to outlive
        RENEW_DEADLINE (60%), so that the renew deadline has to stop it; a stall of its wrapper's
        stderr (piped, 50%) until after it should have ended, so that its end, the revocation and
        the exit happen with the log blocked; a watch freeze and the deletion of its key (proxied,
        lasting 1.5 s or more, 40%), so that only the leader's re-read can notice; a SIGKILL of
        its wrapper 0.2-1 s in (when it started a grandchild, 30%), so that the guardian has to
        kill the group and a setsid'd grandchild shows the documented limit."""
        for c in self.monitor.running_children():
            if c.start_ns is None or c in self.considered or c.wrapper is None:
                continue
            self.considered.add(c)
            w = c.wrapper
            freeze, stall, preempt, kill = (self.rng_faults.random() for _ in range(4))
            stall_for = w.child_seconds + self.rng_faults.uniform(0.5, 3.0)
            kill_in = self.rng_faults.uniform(0.2, 1.0)
            if self.preemption_busy() or w.rc is not None:
                continue
            why = f"under {w.label}'s command"
            if w.child_seconds >= RENEW_DEADLINE + 0.5 and freeze < 0.6 and self.freeze_allowed():
                self.freeze(why)
            if w.pipe is not None and stall < 0.5:
                self.stall_wrapper(w, stall_for, why)
            if (w.proxied and w.child_seconds >= 1.5 and preempt < 0.4 and self.cluster_healthy()
                    and c.key is not None):
                self.freeze_watches(target=c)
            if (w.grandchild is not None and kill < 0.3 and self.kill_at is None
                    and not self.preemption_busy()):
                self.kill_at = (time.monotonic() + min(kill_in, w.child_seconds * 0.8), c)

    def maybe_kill_grandparent(self):
        """The SIGKILL planned by maybe_fault_new_leader, if its command still runs and no freeze
        or preemption is under way (the renew deadline or the bound must not be blurred)."""
        if self.kill_at is None or time.monotonic() < self.kill_at[0]:
            return
        c = self.kill_at[1]
        self.kill_at = None
        w = c.wrapper
        if (c.end_ns is not None or c.gone_ns is not None or w.rc is not None
                or self.frozen_until is not None or self.preemption_busy()):
            return
        alive = [g for g in c.grandchildren if g.eff_end is None]
        w.signals.append((now_ns(), "SIGKILL"))
        try:
            os.kill(w.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        kinds = ",".join(g.kind for g in alive) or "none recorded yet"
        self.fault("wrapper-sigkill", f"{w.label} (leader; grandchildren alive: {kinds})")

    def freeze(self, why="at random"):
        if not self.freeze_allowed():
            return False
        # Half the freezes end between RENEW_DEADLINE and the lease TTL (leases outlive the freeze
        # while every renew deadline has passed), half after the TTL (leases expire while frozen).
        if self.rng_faults.random() < 0.5:
            duration = self.rng_faults.uniform(RENEW_DEADLINE + 0.2, LEASE_DURATION - 0.2)
        else:
            duration = self.rng_faults.uniform(LEASE_DURATION, LEASE_DURATION + 1.5)
        frozen = [m for m in self.cluster.members if m.proc is not None]
        for m in frozen:
            os.kill(m.proc.pid, signal.SIGSTOP)
            m.frozen = True
        self.frozen_members = frozen
        self.frozen_until = time.monotonic() + duration
        names = ",".join(m.name for m in frozen)
        self.fault("freeze", f"SIGSTOP {names} for {duration:.1f}s, {why}")
        return True

    def thaw(self, force=False):
        if self.frozen_until is None or (not force and time.monotonic() < self.frozen_until):
            return
        for m in self.frozen_members:
            if m.proc is not None:
                os.kill(m.proc.pid, signal.SIGCONT)
            m.frozen = False
        self.event("resume", f"SIGCONT {','.join(m.name for m in self.frozen_members)}")
        self.frozen_members = []
        self.frozen_until = None
        self.last_freeze_end = time.monotonic()

    # -- the loop

    def inject(self):
        """One fault; a kind that is not possible now (a member already down, a freeze too recent,
        no wrapper running) gives way to the next draw. None while a preemption is under way."""
        if self.preemption_busy():
            return False
        kinds = ["wrapper-sigkill", "wrapper-sigterm", "etcd-kill", "freeze", "stderr-stall",
                 "watch-freeze", "preempt"]
        weights = [3, 3, 2, 1, 2, 2, 1]
        for _ in range(6):
            kind = self.rng_faults.choices(kinds, weights)[0]
            if kind == "wrapper-sigkill":
                done = self.signal_wrapper(signal.SIGKILL)
            elif kind == "wrapper-sigterm":
                done = self.signal_wrapper(signal.SIGTERM)
            elif kind == "etcd-kill":
                done = self.kill_member()
            elif kind == "freeze":
                done = self.freeze()
            elif kind == "stderr-stall":
                done = self.stall_stderr()
            elif kind == "watch-freeze":
                done = self.freeze_watches()
            else:
                done = self.preempt_leader()
            if done:
                return True
        return False

    def step(self, faults=True):
        self.thaw()
        self.thaw_watches()
        self.preemption_steps()
        if faults:
            self.maybe_fault_new_leader()
            self.maybe_kill_grandparent()
        self.restart_members()
        self.reap_wrappers()
        self.kill_survivors()
        t = time.monotonic()
        for slot, w in enumerate(self.slots):
            if w is not None and w.rc is None:
                continue
            if self.restart_at[slot] is None:
                self.restart_at[slot] = t + self.rng_restarts.uniform(0.05, 1.0)
            elif t >= self.restart_at[slot]:
                self.spawn_wrapper(slot)
        if self.monitor.error:
            raise HarnessError(f"monitor thread failed:\n{self.monitor.error}")
        if self.pipes.error:
            raise HarnessError(f"stderr pipe thread failed:\n{self.pipes.error}")
        if self.exits.error:
            raise HarnessError(f"exit watcher failed:\n{self.exits.error}")

    def run(self):
        say(f"starting a 3-member etcd cluster (heartbeat {HEARTBEAT_MS} ms, election timeout "
            f"{ELECTION_MS} ms) in {self.tmp}")
        self.cluster.start()
        say(f"etcd members: {self.cluster.endpoints}")
        self.proxy = WatchProxy(self.cluster.members)
        self.proxy.start()
        say(f"proxy (for slots {', '.join(map(str, PROXIED_SLOTS))}): {self.proxy.endpoints}; "
            f"stderr through a pipe that may stall: slots {', '.join(map(str, PIPED_SLOTS))}")
        self.pipes.start()
        if self.exits.open():
            self.exits.start()
            say("exit times: the kernel's (proc connector)")
        else:
            say(f"exit times: from polls only ({self.exits.unavailable})")
        self.monitor.start()
        for slot in range(CANDIDATES):
            self.spawn_wrapper(slot)
        say(f"{CANDIDATES} candidates on lock {LOCK!r}: LEASE_DURATION={LEASE_DURATION} "
            f"RENEW_DEADLINE={RENEW_DEADLINE} RETRY_PERIOD={RETRY_PERIOD}; injecting faults "
            f"for {self.args.seconds} s (seed {self.seed})")
        start = time.monotonic()
        end = start + self.args.seconds
        next_fault = start + self.rng_faults.uniform(1.0, 2.0)
        next_progress = start + 10
        while time.monotonic() < end:
            self.step()
            t = time.monotonic()
            if t >= next_fault:
                self.inject()
                next_fault = t + self.rng_faults.uniform(0.5, 2.0)
            if t >= next_progress:
                next_progress += 10
                with self.monitor.lock:
                    started = sum(1 for c in self.monitor.children if c.start_ns is not None)
                say(f"progress: {t - start:.0f}/{self.args.seconds} s, {started} commands run, "
                    f"{sum(self.fault_counts.values())} faults")
            time.sleep(0.02)

    def shutdown(self):
        """Heals the cluster (and the watch flows and stderr pipes), SIGTERMs every wrapper, waits
        for them, returns lease observations."""
        say("fault injection over: healing the cluster, the watch flows and the stderr pipes")
        self.thaw(force=True)
        self.thaw_watches(force=True)
        self.pipes.heal()
        if self.preempt_at is not None:
            self.event("preempt-skipped", f"{self.preempt_at[1].label}: the run is over")
            self.preempt_at = None
        deadline = time.monotonic() + 10
        while self.preempting is not None and time.monotonic() < deadline:
            self.preemption_steps()
            time.sleep(0.02)
        if self.preempting is not None:
            raise HarnessError(f"etcdctl of {self.preempting.label} still runs after 10 s")
        for m in self.cluster.members:
            if m.state == "down":
                m.restart_at = time.monotonic()
        self.restart_members()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.members_down():
            self.reap_wrappers()
            time.sleep(0.05)
        if self.members_down():
            down = [m.name for m in self.members_down()]
            raise HarnessError(f"etcd members not healthy 30 s after the end: {down}")
        time.sleep(0.5)
        self.reap_wrappers()
        live = [w for w in self.slots if w is not None and w.rc is None]
        say(f"SIGTERM to the {len(live)} running wrappers")
        for w in live:
            w.final_term = True
            w.signals.append((now_ns(), "SIGTERM"))
            try:
                os.kill(w.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        stubborn = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(w.rc is None for w in live):
            self.reap_wrappers()
            time.sleep(0.02)
        for w in live:
            if w.rc is None:
                stubborn.append(w)
                try:
                    os.kill(w.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                w.proc.wait()
                self.reap_wrappers()
        self.kill_survivors(now_too=True)
        for w in self.monitor.wrappers:
            if w.pipe is not None:
                self.pipes.retire(w.pipe, 0)
        # let the monitor see every command and grandchild gone, and the pipes drain
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and (
                self.monitor.live_children or self.monitor.live_grandchildren
                or self.pipes.open_pipes()):
            time.sleep(0.02)
        last_exit = max((w.exit_ns or now_ns()) for w in self.monitor.wrappers)
        leases_now = self.cluster.leases()
        keys_now = self.cluster.keys()
        lease_deadline = last_exit + (LEASE_DURATION + 1) * 1_000_000_000
        say(f"every wrapper exited; {len(leases_now)} leases right away; polling until none is "
            f"left, at most until LEASE_DURATION + 1 s after the last exit")
        leases_late = leases_now
        while True:
            leases_late = self.cluster.leases()
            if not leases_late or now_ns() >= lease_deadline:
                break
            time.sleep(0.2)
        keys_late = self.cluster.keys()
        late_ttls = {lease: self.cluster.lease_ttl(lease) for lease in leases_late}
        return {
            "stubborn": stubborn,
            "leases_now": leases_now,
            "keys_now": keys_now,
            "leases_late": leases_late,
            "keys_late": keys_late,
            "late_ttls": late_ttls,
        }


def describe_rc(rc):
    if rc is None:
        return "running"
    if rc < 0:
        return f"killed by {signal.Signals(-rc).name}"
    return str(rc)


# ---------------------------------------------------------------------------------------------
# the checks


LEASE_TAKEN = re.compile(r"(?:lease granted|adopted our key from an earlier run).* lease=([0-9a-f]+)")


def wrapper_log_lines(w):
    try:
        with open(w.log_path, "rb") as f:
            data = f.read()
    except OSError:
        return []
    out = []
    for line in data.splitlines():
        ts = log_ts_ns(line)
        out.append((ts, line.decode(errors="replace")))
    return out


def classify_grandchildren(mon, failures, warnings):
    """The grandchildren the checks exempt -- setsid'd ones alive when their wrapper was
    SIGKILLed, the documented limit -- and those of them that outlived it by more than GRACE."""
    exempt, survivors = set(), []
    for g in mon.grandchildren:
        w = g.wrapper
        if g.parent is None:
            failures.append(f"grandchild of no known command: pid {g.pid} ({g.identity})")
            continue
        if g.eff_end is None:
            failures.append(f"no end and never seen gone: {g.label}")
        if g.kind == "setsid" and g.sid is not None and g.sid != g.pid:
            warnings.append(f"{g.label} is not in a session of its own (sid {g.sid})")
        if (g.kind == "setsid" and w is not None and w.killed and w.exit_ns is not None
                and (g.eff_end is None or g.eff_end > w.exit_ns)):
            exempt.add(g)
            if g.last_alive_ns is not None and g.last_alive_ns > w.exit_ns + GRACE_NS:
                survivors.append(g)
    return exempt, survivors


def check(chaos, final):
    mon = chaos.monitor
    failures = []
    warnings = []
    kernel = chaos.exits.sock is not None
    for c in mon.children:
        if kernel and c.eff_start is not None:
            c.exit_ns = chaos.exits.exit_after(c.pid, c.eff_start)
    for g in mon.grandchildren:
        if kernel:
            g.exit_ns = chaos.exits.exit_after(g.pid, g.start_ns)
    children = [c for c in mon.children if c.eff_start is not None]
    unterminated = [c for c in children if c.eff_end is None]
    for c in unterminated:
        failures.append(f"no end and never seen gone: {c.label}")
    end_of_time = now_ns()
    intervals = sorted(children, key=lambda c: c.eff_start)
    exempt, survivors = classify_grandchildren(mon, failures, warnings)
    grandchildren = [g for g in mon.grandchildren if g.parent is not None and g not in exempt]
    preempted = {p.child: p for p in chaos.preemptions}

    # 1. overlaps: of two commands, and of a command's grandchild with a later command; a command
    # that started after its predecessor's key was deleted on purpose overlaps by design
    overlaps = []
    preemption_overlaps = []
    unproven = []  # "possible" overlaps whose end is a poll's, without the kernel's exit times

    def judge(owner, a, b):
        a_end = a.eff_end if a.eff_end is not None else end_of_time
        if b.eff_start >= a_end:
            return
        p = preempted.get(owner)
        if p is not None and b.eff_start >= p.t0:
            preemption_overlaps.append((a, b, a_end - b.eff_start, p))
            return
        kind = "certain" if b.eff_start < a.certain_end else "possible"
        if kind == "possible" and not kernel and a.end_source == "poll":
            unproven.append((a, b, a_end - b.eff_start))
            return
        overlaps.append((a, b, kind, a_end - b.eff_start))

    for i, b in enumerate(intervals):
        for a in intervals[:i]:
            judge(a, a, b)
    for g in grandchildren:
        for b in intervals:
            if b is not g.parent and b.eff_start >= g.parent.eff_start:
                judge(g.parent, g, b)

    # 2. commands (and grandchildren) outliving their wrappers
    outlived = []
    for c in children + grandchildren:
        w = c.wrapper
        if w is None or c.last_alive_ns is None or w.exit_ns is None:
            continue
        if c.last_alive_ns > w.exit_ns + GRACE_NS:
            outlived.append((c, c.last_alive_ns - w.exit_ns))
    orphans = [c for c in children if c.wrapper is None]
    for c in orphans:
        failures.append(f"command with no known wrapper (ppid not a wrapper we started): {c.label}")

    # 3. fencing tokens
    regressions = []
    started = [c for c in intervals if c.start_ns is not None and c.revision is not None]
    for a, b in zip(started, started[1:]):
        if b.revision < a.revision or (b.revision == a.revision and b.identity != a.identity):
            regressions.append((a, b))

    # 4. wrapper logs: lost leadership under a running command, unexpected exit codes, leases
    lost = []
    expected_losses = []
    deadline_stops = []
    stale_starts = []
    granted = collections.defaultdict(list)  # lease id -> wrappers
    revoked = set()
    cannot_revoke = set()
    rcs = collections.Counter()
    preempted_wrappers = collections.defaultdict(list)
    for p in chaos.preemptions:
        if p.child.wrapper is not None:
            preempted_wrappers[p.child.wrapper].append(p)
    for w in mon.wrappers:
        rcs[describe_rc(w.rc)] += 1
        lines = wrapper_log_lines(w)
        child_started = None
        stale = None
        for ts, line in lines:
            m = LEASE_TAKEN.search(line)
            if m:
                granted[int(m.group(1), 16)].append(w)
            m = re.search(r"lease revoked lease=([0-9a-f]+)", line)
            if m:
                revoked.add(int(m.group(1), 16))
            if "cannot revoke" in line:
                cannot_revoke.add(w)
            if " child started " in line:
                child_started = ts
            if "leadership lost" in line:
                # after the driver deleted this wrapper's key: the preemption, not a failure
                ours = [p for p in preempted_wrappers.get(w, [])
                        if ts is not None and ts >= p.t0 - p.t0 % MS
                        and "our key was deleted" in line]
                if ours:
                    expected_losses.append((w, ts, line, ours[-1]))
                else:
                    lost.append((w, ts, line))
            if "renew deadline passed" in line:
                deadline_stops.append(w)
                if child_started is not None and ts is not None and ts - child_started <= STALE_NS:
                    stale = [w, ts - child_started, False, child_started]
                    stale_starts.append(stale)
            if "child still running; sent SIGKILL" in line and stale is not None:
                if ts is not None and ts - stale[3] <= STALE_NS:
                    stale[2] = True
        if w.rc not in (0, 143, -9, -15, 75) and not (w.rc is not None and w.rc > 128):
            warnings.append(f"{w.label} exited {describe_rc(w.rc)}")

    # 5. leases
    lease_leaks = final["leases_late"]
    unrevoked_clean = []
    for lease in final["leases_now"]:
        owners = granted.get(lease, [])
        if not owners:
            unrevoked_clean.append((lease, "no wrapper logged it"))
            continue
        w = owners[-1]
        if w.rc == -signal.SIGKILL or w in final["stubborn"]:
            continue  # expires by TTL, as documented
        if w in cannot_revoke:
            continue
        unrevoked_clean.append((lease, f"{w.label} exited {describe_rc(w.rc)}"))

    # 6. deliberate preemptions: the command and its grandchildren gone within the bound
    preemption_stops = []  # (Preemption, ns from the deletion's start to the tree's end)
    for p in chaos.preemptions:
        if p.rc != 0 or p.deleted != 1:
            warnings.append(f"{p.label}: etcdctl rc {p.rc}, deleted {p.deleted}: not checked")
            continue
        tree = [p.child] + [g for g in p.child.grandchildren if g not in exempt]
        ends = [x.eff_end for x in tree]
        if any(e is None for e in ends):
            failures.append(f"{p.label}: never stopped")
            continue
        took = max(ends) - p.t0
        preemption_stops.append((p, took))
        if took > PREEMPT_BOUND_NS:
            failures.append(f"{p.label} stopped {took / MS:.0f} ms after the deletion began "
                            f"(bound {PREEMPT_BOUND_NS / MS:.0f} ms)")

    # -- failures
    for a, b, kind, by in overlaps:
        failures.append(
            f"OVERLAP ({kind}, {by / MS:.1f} ms): {b.label} started while {a.label} ran")
    for c, by in outlived:
        what = "grandchild" if isinstance(c, Grandchild) else "command"
        failures.append(f"{what} outlived its wrapper by {by / MS:.0f} ms: {c.label}")
    for a, b in regressions:
        failures.append(f"fencing token went backwards: {a.label} then {b.label}")
    for w, ts, line in lost:
        failures.append(f"leadership lost under a running command ({w.label}): {line}")
    for w in final["stubborn"]:
        failures.append(f"wrapper still running 10 s after the final SIGTERM: {w.label}")
    if lease_leaks:
        failures.append(
            f"{len(lease_leaks)} leases left LEASE_DURATION + 1 s after the last wrapper exited: "
            + ", ".join(f"{lease:x} (ttl {final['late_ttls'][lease]})" for lease in lease_leaks))
    if final["keys_late"]:
        failures.append(f"keys left under {LOCK}/: {final['keys_late']}")
    for c in children:
        if c.bad_identity:
            failures.append(f"command's identity does not match its wrapper's: {c.label}")
    for line in mon.bad_lines:
        failures.append(f"unparsable shared-log line: {line!r}")
    if mon.error:
        failures.append(f"monitor failed: {mon.error}")
    for lease, why in unrevoked_clean:
        warnings.append(f"lease {lease:x} still present right after a clean exit ({why}); "
                        "it expired by TTL")
    for a, b, by in unproven:
        warnings.append(f"unproven overlap ({by / MS:.1f} ms, within the lag of the poll that saw "
                        f"it gone; no kernel exit times): {b.label} started while {a.label} ran")
    for w, after, killed, _ in stale_starts:
        failures.append(
            f"{w.label} started its command on a lapsed renewal: 'renew deadline passed' "
            f"{after / MS:.0f} ms after 'child started'"
            + (", and SIGKILL at once (so even (RENEW_DEADLINE + LEASE_DURATION) / 2 had passed: "
               "the lease may already have expired on the server)" if killed else ""))
    return {
        "failures": failures,
        "warnings": warnings,
        "intervals": intervals,
        "overlaps": overlaps,
        "preemption_overlaps": preemption_overlaps,
        "preemption_stops": preemption_stops,
        "outlived": outlived,
        "regressions": regressions,
        "lost": lost,
        "expected_losses": expected_losses,
        "rcs": rcs,
        "deadline_stops": deadline_stops,
        "unrevoked_clean": unrevoked_clean,
        "stale_starts": stale_starts,
        "lease_leaks": lease_leaks,
        "exempt": exempt,
        "survivors": survivors,
    }


def timeline(chaos, around_ns=None, before_s=4.0, after_s=1.0, limit=120):
    """Every event within the window (all of them without around_ns): faults, shared log (but the
    grandchildren's `alive` records), wrapper logs, wrapper exits."""
    if around_ns is None:
        lo, hi, limit = 0, 1 << 62, None
    else:
        lo, hi = around_ns - int(before_s * 1e9), around_ns + int(after_s * 1e9)
    rows = []
    try:
        with open(chaos.log_path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit() and parts[0] != "alive":
                    ns = int(parts[1])
                    if lo <= ns <= hi:
                        rows.append((ns, "log   ", line.rstrip()))
    except OSError:
        pass
    for w in chaos.monitor.wrappers:
        for ts, line in wrapper_log_lines(w):
            if ts is not None and lo <= ts <= hi:
                rows.append((ts, f"{w.identity}#{w.number:<3}", line[25:].rstrip()[:150]))
    rows.sort(key=lambda r: r[0])
    if limit is not None and len(rows) > limit:
        rows = rows[-limit:]
    return "\n".join(f"    {rel(ns)} {src} {text}" for ns, src, text in rows)


def at(ns):
    return rel(ns) if ns is not None else "-"


def describe(c):
    """A command's or grandchild's observations, for a failure's details."""
    rc = describe_rc(c.wrapper.rc) if c.wrapper else "?"
    if isinstance(c, Grandchild):
        return (f"{c.label}: start {at(c.start_ns)}, end {at(c.end_ns)}, last alive record "
                f"{at(c.alive_ns)}, last seen alive {at(c.last_polled_ns)}, gone {at(c.gone_ns)}, "
                f"kernel exit {at(c.exit_ns)}; wrapper rc {rc}")
    return (f"{c.label}: start {at(c.eff_start)} (recorded {at(c.start_ns)}, spawn log "
            f"{at(c.spawn_ns)}, found in /proc {at(c.discovered_ns)}), end {at(c.end_ns)} "
            f"({c.end_why}), last seen alive {at(c.last_alive_ns)}, gone {at(c.gone_ns)}, reaped "
            f"before {at(c.reaped_ns)}, kernel exit {at(c.exit_ns)}; wrapper rc {rc}")


def longest(values):
    return f"{max(values) / MS:.0f} ms" if values else "-"


def seconds(values):
    return f"total {sum(values) / 1e9:.1f} s, longest {max(values) / 1e9:.1f} s" if values else "-"


def report_new_faults(chaos, result):
    """The figures of the stalled stderr, the frozen watches, the preemptions, the grandchildren."""
    mon = chaos.monitor
    piped = [w for w in mon.wrappers if w.pipe is not None]
    pipes = [w.pipe for w in piped]
    stalls = [st for p in pipes for st in p.stalls]
    children = result["intervals"]
    late = [c for c in children if c.wrapper is not None and c.wrapper.pipe is not None
            and c.spawn_ns is None]
    proc_only = [c for c in children if c.start_ns is None and c.spawn_ns is None]
    print(f"stderr stalls:      {len(stalls)} on {len(piped)} piped wrappers (slots "
          f"{', '.join(map(str, PIPED_SLOTS))}), {seconds([e - s for s, e, _, _ in stalls])}, "
          f"{sum(1 for st in stalls if st[3])} under a running command")
    print(f"  their logs:       {sum(p.blocked_stalls for p in pipes)} stalls ended with the "
          f"wrapper's log writer blocked in write(2); "
          f"{sum(p.held_lines for p in pipes)} lines held back by a stall; "
          f"{sum(p.dropped_notes for p in pipes)} 'log lines were dropped' notes "
          f"({sum(p.dropped_lines for p in pipes)} lines); "
          f"{sum(1 for w in piped if w.exited_stalled)} wrappers exited while stalled; "
          f"{len(late)} 'child started' lines never came; {len(proc_only)} commands known only "
          f"from /proc")
    proxy = chaos.proxy
    freezes = proxy.freezes
    print(f"watch freezes:      {len(freezes)} through the proxy (slots "
          f"{', '.join(map(str, PROXIED_SLOTS))}), {seconds([e - s for s, e, _ in freezes])}, "
          f"{sum(h for _, _, h in freezes)} watch connections held; proxied connections: "
          f"{proxy.counts['watch']} watch, {proxy.counts['unary']} unary, "
          f"{proxy.counts['refused']} refused by a member")
    stops = result["preemption_stops"]
    frozen = [t for p, t in stops if p.frozen]
    live = [t for p, t in stops if not p.frozen]
    etcdctl = [p.t1 - p.t0 for p in chaos.preemptions if p.t1 is not None]
    print(f"preemptions:        {len(chaos.preemptions)} (etcdctl del of the leader's key; "
          f"{len(frozen)} checked with its watch frozen, {len(live)} live); tree gone after the "
          f"deletion began: max {longest(frozen)} watch frozen, max {longest(live)} live "
          f"(bound {PREEMPT_BOUND_NS / MS:.0f} ms); etcdctl took at most {longest(etcdctl)}")
    po = result["preemption_overlaps"]
    print(f"preemption overlap: {len(po)} pairs, max {longest([by for _, _, by, _ in po])} (a "
          f"new leader started after the deletion while the preempted command or a grandchild "
          f"of it died; allowed, and excluded from the overlap check); their 'leadership lost' "
          f"lines: "
          f"{len(result['expected_losses'])}")
    gs = mon.grandchildren
    kinds = collections.Counter(g.kind for g in gs)
    ended = sum(1 for g in gs if g.end_ns is not None)
    print(f"grandchildren:      {len(gs)} ({kinds['setsid']} setsid'd, {kinds['group']} in the "
          f"command's group); {ended} reached their end, {len(gs) - ended} were killed")
    at_kill = collections.Counter()
    for g in gs:
        w = g.wrapper
        kills = [ns for ns, name in w.signals if name == "SIGKILL"] if w is not None else []
        if w is None or not w.killed or not kills:
            continue
        if g.start_ns <= kills[-1] and (g.eff_end is None or g.eff_end > kills[-1]):
            at_kill[g.kind] += 1
    print(f"  wrapper SIGKILLs: {at_kill['group']} group grandchildren alive at their wrapper's "
          f"SIGKILL (checked like commands); {at_kill['setsid']} setsid'd ones, "
          f"{len(result['survivors'])} of which survived it (the documented limit), "
          f"{sum(1 for g in gs if g.killed_ns is not None)} then killed by the driver")


def report(chaos, result, final, elapsed):
    intervals = result["intervals"]
    print()
    print("==== chaos summary ====")
    print(f"duration:           {chaos.args.seconds} s of faults, {elapsed:.0f} s in all")
    print(f"seed:               {chaos.seed}  (replay: scripts/chaos.sh {chaos.args.seconds} "
          f"--seed {chaos.seed})")
    print(f"settings:           3 etcd members (heartbeat {HEARTBEAT_MS} ms, election "
          f"{ELECTION_MS} ms), {CANDIDATES} candidates, LEASE_DURATION={LEASE_DURATION} "
          f"RENEW_DEADLINE={RENEW_DEADLINE} RETRY_PERIOD={RETRY_PERIOD}")
    recorded = [c for c in intervals if c.start_ns is not None]
    silent = [c for c in intervals if c.start_ns is None]
    print(f"commands run:       {len(intervals)} ({len(recorded)} recorded their start; "
          f"{len(silent)} killed before they could)")
    other = sum(1 for a, b in zip(intervals, intervals[1:]) if a.identity != b.identity)
    print(f"handovers:          {max(0, len(intervals) - 1)} (leader changes: one per command "
          f"after the first; {other} to another identity)")
    gaps = [b.eff_start - a.eff_end for a, b in zip(intervals, intervals[1:])
            if a.eff_end is not None]
    if gaps:
        print(f"handover gaps:      min {min(gaps) / MS:.1f} ms, median "
              f"{statistics.median(gaps) / MS:.0f} ms, max {max(gaps) / MS:.0f} ms")
    ends = collections.Counter(c.end_why or "no end record (gone)" for c in intervals)
    print(f"how commands ended: {dict(ends)}")
    print(f"wrappers started:   {len(chaos.monitor.wrappers)}; exit codes: {dict(result['rcs'])}")
    print(f"renew-deadline stops: {len(result['deadline_stops'])}")
    print(f"faults injected:    {sum(chaos.fault_counts.values())} "
          f"{dict(sorted(chaos.fault_counts.items()))}")
    print(f"monitor:            longest gap between polls {chaos.monitor.max_gap_s * 1000:.0f} ms")
    exits = chaos.exits
    if exits.sock is not None:
        print(f"exit times:         the kernel's (proc connector: {exits.events} exits seen, "
              f"{exits.overruns} buffer overruns); ends by source: "
              f"{dict(collections.Counter(c.end_source for c in intervals))}")
    else:
        print(f"exit times:         polls only ({exits.unavailable})")
    report_new_faults(chaos, result)
    print(f"right after the last exit: {len(final['leases_now'])} leases (not revoked after a "
          f"clean exit: {len(result['unrevoked_clean'])}), {len(final['keys_now'])} keys")
    print(f"overlaps:           {len(result['overlaps'])}  (must be 0; commands and grandchildren)")
    print(f"outlived wrapper:   {len(result['outlived'])}  (must be 0; commands and grandchildren "
          f"but setsid'd ones after a wrapper SIGKILL)")
    print(f"preemptions past the bound: "
          f"{sum(1 for _, t in result['preemption_stops'] if t > PREEMPT_BOUND_NS)}  (must be 0)")
    print(f"leaked leases:      {len(result['lease_leaks'])}  (must be 0, checked "
          f"LEASE_DURATION + 1 s after the last exit)")
    print(f"fencing regressions: {len(result['regressions'])}  (must be 0)")
    print(f"leadership lost under a running command: {len(result['lost'])}  (must be 0)")
    print(f"commands started on a lapsed renewal: {len(result['stale_starts'])}  (must be 0)")
    for note in chaos.notes:
        print(f"note: {note}")
    for warning in result["warnings"]:
        print(f"warning: {warning}")
    for a, b, kind, by in result["overlaps"][:5]:
        print()
        print(f"---- overlap ({kind}, {by / MS:.1f} ms) ----")
        for c in (a, b):
            print(f"  {describe(c)}")
        print("  timeline:")
        print(timeline(chaos, b.eff_start))
    for c, by in result["outlived"][:5]:
        print()
        print(f"---- {c.label} outlived its wrapper by {by / MS:.0f} ms ----")
        print(f"  {describe(c)}")
        print(timeline(chaos, c.wrapper.exit_ns, before_s=2, after_s=1))
    for p, took in [(p, t) for p, t in result["preemption_stops"] if t > PREEMPT_BOUND_NS][:3]:
        print()
        print(f"---- {p.label}: gone {took / MS:.0f} ms after the deletion began ----")
        for c in [p.child] + p.child.grandchildren:
            print(f"  {describe(c)}")
        print(timeline(chaos, p.t0, before_s=1, after_s=took / 1e9 + 0.5))
    for w, after, killed, ts in result["stale_starts"][:3]:
        print()
        print(f"---- {w.label} started its command on a lapsed renewal ----")
        print(timeline(chaos, ts, before_s=4, after_s=0.3))
    for w, ts, line in result["lost"][:5]:
        print()
        print(f"---- leadership lost: {w.label} ----")
        print(timeline(chaos, ts or now_ns(), before_s=4, after_s=1))
    print()
    for failure in result["failures"]:
        print(f"FAIL: {failure}")
    print("PASS" if not result["failures"] else "FAIL")


# ---------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("seconds", nargs="?", type=int, default=60)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--tmp", required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--save", default=None, help="copy the logs here at the end")
    parser.add_argument("--quiet", action="store_true", help="do not print every fault")
    args = parser.parse_args()
    if args.seconds < 1:
        parser.error("SECONDS must be at least 1")
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    started = time.monotonic()

    def interrupt(signum, _frame):
        raise Interrupted(signal.Signals(signum).name)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)

    procs = Processes(args.registry)
    chaos = None
    rc = 2
    say(f"seed {args.seed}")
    try:
        chaos = Chaos(args, procs)
        chaos.run()
        final = chaos.shutdown()
        chaos.monitor.stop()
        result = check(chaos, final)
        report(chaos, result, final, time.monotonic() - started)
        rc = 1 if result["failures"] else 0
    except Interrupted as e:
        say(f"interrupted ({e}); cleaning up")
        rc = 130
    except HarnessError as e:
        say(f"HARNESS ERROR: {e}")
        rc = 2
    except Exception:
        traceback.print_exc()
        rc = 2
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if chaos is not None:
            for m in chaos.cluster.members:
                if m.proc is not None and m.frozen:
                    try:
                        os.kill(m.proc.pid, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
            chaos.monitor.stop_event.set()
            if chaos.proxy is not None:
                chaos.proxy.stop()
            chaos.pipes.heal()
            chaos.exits.stop()
        procs.kill_all()
        kill_strays(args.tmp)
        if chaos is not None:
            chaos.pipes.stop()
        if args.save and chaos is not None:
            save_logs(args, chaos)
    if rc == 2:
        say("harness error (not a verdict on the tool)")
    return rc


def kill_strays(tmp):
    """SIGKILLs, by pid, every process whose command line names our scratch directory (a unique
    mkdtemp name): a setsid'd grandchild that escaped before the monitor adopted its session."""
    marker = os.fsencode(tmp.rstrip("/") + "/")
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid() and marker in proc_cmdline(entry):
            try:
                os.kill(int(entry), signal.SIGKILL)
            except ProcessLookupError:
                pass


def save_logs(args, chaos):
    try:
        if os.path.isdir(args.save):
            shutil.rmtree(args.save)
        os.makedirs(args.save)
        for name in os.listdir(args.tmp):
            path = os.path.join(args.tmp, name)
            if os.path.isfile(path) and name.endswith(".log"):
                shutil.copy(path, args.save)
        with open(os.path.join(args.save, "timeline.txt"), "w") as f:
            f.write(timeline(chaos) + "\n")
        with open(os.path.join(args.save, "faults.txt"), "w") as f:
            f.write(f"seed {chaos.seed}\n")
            for ns, kind, detail in chaos.faults:
                f.write(f"{ns} {rel(ns)} {kind} {detail}\n")
        say(f"logs saved in {args.save}")
    except OSError as e:
        say(f"could not save the logs: {e}")


if __name__ == "__main__":
    sys.exit(main())
