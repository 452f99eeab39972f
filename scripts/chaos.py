#!/usr/bin/env python3
"""Chaos test behind scripts/chaos.sh (Python 3.11 standard library only).

Runs five etcd-await-election candidates on one lock against a 3-member etcd cluster on loopback,
injects faults at random for SECONDS, then checks what the candidates' commands did:

  - no two commands ever ran at once (overlapping intervals),
  - no command outlived its wrapper (alive more than GRACE after the wrapper's exit was observed),
  - no lease is left in etcd once every wrapper has exited and LEASE_DURATION + 1 s have passed,
  - fencing tokens (ETCD_AWAIT_ELECTION_LEADER_REVISION) never go backwards from one command to the next,
  - no wrapper logged "leadership lost" (its key or lease vanished under a running command: with
    no operator deleting keys and no FORCE_ACQUIRE, the lease expired while the command still ran,
    which the renew deadline exists to prevent),
  - no command was started on a lapsed renewal: "renew deadline passed" logged within 5 ms of
    "child started" means the last acknowledged keepalive was already about RENEW_DEADLINE old
    when the command started (or older: then the lease may already have expired on the server,
    its key only waiting for etcd's lessor to revoke it).

The commands (a small bash script, CHILD below) append `start <ns> <identity> <pid> <ppid> <rev>`
and `end <ns> <identity> <pid> <why>` to one shared log (O_APPEND, one write per line;
CLOCK_REALTIME from bash's $EPOCHREALTIME, no fork). A command killed by SIGKILL cannot write its
end, so a monitor thread polls every known command's and wrapper's pid every ~5 ms and appends
`gone <ns> <pid>` the first time it finds it dead (missing, zombie, or its pid reused). The monitor
also tails every wrapper's log for `child started pid=N`, so a command killed before it could
write its start is still watched. For the checks:

  - a command's interval starts at min(its recorded start, its wrapper's `child started` log time
    rounded down to the ms) and ends at min(its recorded end, first `gone`, its wrapper's
    `child exited|stopped` log time + 1 ms, which is logged after waitpid reaped it); without an
    end record it ends at the first observation of its death (late: in favour of finding
    overlaps). An overlap is "certain" when the next command started before the end record (or
    before the last poll that saw the first one alive), "possible" when it started between that
    poll and the observed death. Both fail the run.
  - "outlived its wrapper" needs a poll that saw the command alive (timestamp taken before the
    look) more than GRACE after a poll that saw the wrapper dead (timestamp taken after the look),
    so monitor lag never makes a false positive.

Faults (seeded; --seed replays the same sequence of choices, not the same timing): SIGKILL or
SIGTERM of a wrapper (half the time the leader's), SIGKILL of an etcd member (half the time the
raft leader) restarted on the same data dir 0.5-3 s later (never two members down at once), and a
freeze of the whole cluster (SIGSTOP to every running member) for 2.2-2.8 s (past the renew
deadline, not the lease TTL) or 3-4.5 s (past both), at most one per 7 s: at random, and (60% of
the time) just after a command started that plans to outlive RENEW_DEADLINE, so that the renew
deadline has to stop it (during a freeze the leader's wrapper is not signalled). Wrappers that
exit are restarted with the same identity after 0.05-1 s (after a SIGKILL: seamless takeover).

Every process runs in its own session, whose id is appended to --registry; cleanup kills every
process of those sessions (commands in their own process groups and orphans included), also on
Ctrl-C, SIGTERM and errors, then empties the registry. --save copies the logs and a merged
timeline.txt there. Exit status: 0 PASS, 1 FAIL, 2 harness error, 130 interrupted.
"""

import argparse
import base64
import calendar
import collections
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback

from harness_common import Processes, b64, prefix_end

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

CHILD = r"""#!/bin/bash
# The chaos test's command: records its start and end in $CHAOS_LOG, one write per line.
now() { local t=${EPOCHREALTIME/[.,]/}; REPLY="${t}000"; }
ended() {
    now
    printf 'end %s %s %s %s\n' "$REPLY" "$ETCD_AWAIT_ELECTION_IDENTITY" "$$" "$1" >>"$CHAOS_LOG"
}
trap 'ended TERM; exit 143' TERM
now
printf 'start %s %s %s %s %s\n' "$REPLY" "$ETCD_AWAIT_ELECTION_IDENTITY" "$$" "$PPID" \
    "${ETCD_AWAIT_ELECTION_LEADER_REVISION:-?}" >>"$CHAOS_LOG"
sleep "$CHAOS_CHILD_SECONDS" &
wait $!
ended done
exit 0
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
# records


class Wrapper:
    def __init__(self, number, slot, identity, proc, log_path, child_seconds):
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

    @property
    def label(self):
        return f"{self.identity}#{self.number} (pid {self.pid})"

    @property
    def exit_ns(self):
        seen = [t for t in (self.gone_ns, self.exit_seen_ns) if t is not None]
        return min(seen) if seen else None


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
        self.bad_identity = False

    @property
    def eff_start(self):
        known = [t for t in (self.start_ns, self.spawn_ns) if t is not None]
        return min(known) if known else None

    @property
    def eff_end(self):
        known = [t for t in (self.end_ns, self.gone_ns, self.reaped_ns) if t is not None]
        return min(known) if known else None

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


# ---------------------------------------------------------------------------------------------
# monitor


class Monitor(threading.Thread):
    """Tails the shared log and the wrappers' logs; polls every command's and wrapper's pid."""

    CHILD_STARTED = re.compile(rb" child started pid=(\d+)")
    CHILD_REAPED = re.compile(rb" child (?:exited|stopped) pid=(\d+)")

    def __init__(self, log_path, child_script):
        super().__init__(name="monitor", daemon=True)
        self.log_path = log_path
        self.child_marker = os.path.basename(child_script).encode()
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.children = []  # every Child, in discovery order
        self.live_children = set()  # Children not yet gone
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
                _, ns, identity, pid, ppid, revision = parts
                self.on_start(int(ns), identity, int(pid), int(ppid), revision)
            elif kind == "end":
                _, ns, identity, pid, why = parts
                self.on_end(int(ns), identity, int(pid), why)
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

    def on_start(self, ns, identity, pid, ppid, revision):
        with self.lock:
            wrapper = self.wrapper_by_pid.get(ppid)
            c = self.child_for(pid, wrapper, "start_ns")
            c.start_ns = ns
            c.identity = identity
            c.revision = int(revision) if revision.isdigit() else None
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

    def read_wrapper_logs(self, final=False):
        with self.lock:
            wrappers = [w for w in self.wrappers if final or w.gone_ns is None or w.log_offset == 0
                        or now_ns() - w.gone_ns < 2_000 * MS]
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
        self.live_children.discard(c)
        self.note(f"gone {ns} {c.pid}")

    def poll(self):
        with self.lock:
            for c in list(self.live_children):
                t0 = now_ns()
                st = proc_stat(c.pid)
                t1 = now_ns()
                if st is None or st[0] in ("Z", "X") or st[2] != c.starttime:
                    self.gone(c, t1)
                else:
                    c.last_alive_ns = t0
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
        self.monitor = Monitor(self.log_path, self.child_script)
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
        log_path = os.path.join(self.tmp, f"wrapper-{number:04d}-{identity}.log")
        env = clean_env(
            {
                "ETCD_AWAIT_ELECTION_LOCK_NAME": LOCK,
                "ETCD_AWAIT_ELECTION_IDENTITY": identity,
                "ETCD_AWAIT_ELECTION_ENDPOINTS": self.cluster.endpoints,
                "ETCD_AWAIT_ELECTION_LEASE_DURATION": str(LEASE_DURATION),
                "ETCD_AWAIT_ELECTION_RENEW_DEADLINE": str(RENEW_DEADLINE),
                "ETCD_AWAIT_ELECTION_RETRY_PERIOD": RETRY_PERIOD,
                "CHAOS_LOG": self.log_path,
                "CHAOS_CHILD_SECONDS": f"{child_seconds:.3f}",
            }
        )
        proc = self.procs.spawn([self.args.bin, "/bin/bash", self.child_script], env, log_path)
        w = Wrapper(number, slot, identity, proc, log_path, child_seconds)
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
            self.monitor.note(f"wexit {w.exit_seen_ns} {w.identity} {w.pid} {rc}")
            if not self.args.quiet:
                say(f"      exit: {w.label} rc={describe_rc(rc)}")

    def leader_wrapper(self):
        running = self.monitor.running_children()
        for c in running:
            if c.wrapper is not None and c.wrapper.rc is None:
                return c.wrapper
        return None

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

    def maybe_freeze_new_leader(self):
        """A command that just started and plans to outlive RENEW_DEADLINE: freeze the cluster
        under it (60% of the time) so that the renew deadline has to stop it."""
        for c in self.monitor.running_children():
            if c.start_ns is None or c in self.considered or c.wrapper is None:
                continue
            self.considered.add(c)
            if c.wrapper.child_seconds < RENEW_DEADLINE + 0.5:
                continue
            if self.rng_faults.random() < 0.6 and self.freeze_allowed():
                self.freeze(f"under {c.wrapper.label}'s command")

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
        no wrapper running) gives way to the next draw."""
        kinds = ["wrapper-sigkill", "wrapper-sigterm", "etcd-kill", "freeze"]
        weights = [3, 3, 2, 1]
        for _ in range(4):
            kind = self.rng_faults.choices(kinds, weights)[0]
            if kind == "wrapper-sigkill":
                done = self.signal_wrapper(signal.SIGKILL)
            elif kind == "wrapper-sigterm":
                done = self.signal_wrapper(signal.SIGTERM)
            elif kind == "etcd-kill":
                done = self.kill_member()
            else:
                done = self.freeze()
            if done:
                return True
        return False

    def step(self, faults=True):
        self.thaw()
        if faults:
            self.maybe_freeze_new_leader()
        self.restart_members()
        self.reap_wrappers()
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

    def run(self):
        say(f"starting a 3-member etcd cluster (heartbeat {HEARTBEAT_MS} ms, election timeout "
            f"{ELECTION_MS} ms) in {self.tmp}")
        self.cluster.start()
        say(f"etcd members: {self.cluster.endpoints}")
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
        """Heals the cluster, SIGTERMs every wrapper, waits for them, returns lease observations."""
        say("fault injection over: healing the cluster")
        self.thaw(force=True)
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
        # let the monitor see every command gone
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and self.monitor.live_children:
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


def check(chaos, final):
    mon = chaos.monitor
    failures = []
    warnings = []
    children = [c for c in mon.children if c.eff_start is not None]
    unterminated = [c for c in children if c.eff_end is None]
    for c in unterminated:
        failures.append(f"no end and never seen gone: {c.label}")
    end_of_time = now_ns()
    intervals = sorted(children, key=lambda c: c.eff_start)

    # 1. overlaps
    overlaps = []
    for i, b in enumerate(intervals):
        for a in intervals[:i]:
            a_end = a.eff_end if a.eff_end is not None else end_of_time
            if b.eff_start < a_end:
                kind = "certain" if b.eff_start < a.certain_end else "possible"
                overlaps.append((a, b, kind, a_end - b.eff_start))

    # 2. commands outliving their wrappers
    outlived = []
    for c in children:
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
    deadline_stops = []
    stale_starts = []
    granted = collections.defaultdict(list)  # lease id -> wrappers
    revoked = set()
    cannot_revoke = set()
    rcs = collections.Counter()
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
                lost.append((w, ts, line))
            if "renew deadline passed" in line:
                deadline_stops.append(w)
                if child_started is not None and ts is not None and ts - child_started <= STALE_NS:
                    stale = [w, ts - child_started, False, child_started]
                    stale_starts.append(stale)
            if "child still running; sending SIGKILL" in line and stale is not None:
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

    # -- failures
    for a, b, kind, by in overlaps:
        failures.append(
            f"OVERLAP ({kind}, {by / MS:.1f} ms): {b.label} started while {a.label} ran")
    for c, by in outlived:
        failures.append(f"command outlived its wrapper by {by / MS:.0f} ms: {c.label}")
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
        "outlived": outlived,
        "regressions": regressions,
        "lost": lost,
        "rcs": rcs,
        "deadline_stops": deadline_stops,
        "unrevoked_clean": unrevoked_clean,
        "stale_starts": stale_starts,
        "lease_leaks": lease_leaks,
    }


def timeline(chaos, around_ns=None, before_s=4.0, after_s=1.0, limit=120):
    """Every event within the window (all of them without around_ns): faults, shared log, wrapper
    logs, wrapper exits."""
    if around_ns is None:
        lo, hi, limit = 0, 1 << 62, None
    else:
        lo, hi = around_ns - int(before_s * 1e9), around_ns + int(after_s * 1e9)
    rows = []
    try:
        with open(chaos.log_path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
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
    print(f"right after the last exit: {len(final['leases_now'])} leases (not revoked after a "
          f"clean exit: {len(result['unrevoked_clean'])}), {len(final['keys_now'])} keys")
    print(f"overlaps:           {len(result['overlaps'])}  (must be 0)")
    print(f"outlived wrapper:   {len(result['outlived'])}  (must be 0)")
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
            at = lambda ns: rel(ns) if ns is not None else "-"  # noqa: E731
            rc = describe_rc(c.wrapper.rc) if c.wrapper else "?"
            print(f"  {c.label}: start {at(c.eff_start)} (recorded {at(c.start_ns)}, spawn log "
                  f"{at(c.spawn_ns)}), end {at(c.end_ns)} ({c.end_why}), last seen alive "
                  f"{at(c.last_alive_ns)}, gone {at(c.gone_ns)}, reaped before "
                  f"{at(c.reaped_ns)}; wrapper rc {rc}")
        print("  timeline:")
        print(timeline(chaos, b.eff_start))
    for c, by in result["outlived"][:5]:
        print()
        print(f"---- {c.label} outlived its wrapper by {by / MS:.0f} ms ----")
        print(timeline(chaos, c.wrapper.exit_ns, before_s=2, after_s=1))
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
        procs.kill_all()
        if args.save and chaos is not None:
            save_logs(args, chaos)
    if rc == 2:
        say("harness error (not a verdict on the tool)")
    return rc


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
