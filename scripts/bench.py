#!/usr/bin/env python3
"""Benchmark harness behind scripts/bench.sh (Python 3.11 standard library only).

Compares etcd-await-election ("ours") with `etcdctl lock NAME CMD` ("etcdctl", etcd's Go client and
its concurrency.Mutex recipe) on a throwaway single-member etcd. Every figure runs both tools in
alternation (ours, etcdctl, ours, etcdctl, ...) or side by side in one window, so that both see the
same machine state. Writes results.md and results.json and prints the table.

Timestamps: every child records CLOCK_REALTIME in ns with `date +%s%N` from `sh -c` (dash), both when
it starts and just before it exits, so every latency includes the cost of starting `sh` and forking
`date` once; figure 0 measures that cost so it can be subtracted by the reader. Start-up (figure 3)
is measured from Python's time.time_ns() just before Popen.

Every process the harness starts gets its own session; cleanup kills every process of those sessions
(children in their own process groups included), also on Ctrl-C and on errors. The session ids are
appended to --registry so that bench.sh can kill leftovers even if this script is killed.

Exit codes: 0 when every figure ran (targets are reported, not asserted), 1 when the harness failed
(etcd did not start, a tool did not do what the recipe needs, a timeout, a bug), 2 for bad usage.
"""

import argparse
import base64
import datetime
import http.client
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import traceback

from harness_common import Processes, b64, prefix_end, proc_stat_fields

NS_PER_MS = 1_000_000


# ---------------------------------------------------------------------------------------------
# small helpers


def log(message):
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", flush=True)


def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(values):
    values = sorted(values)
    if not values:
        return None
    return {
        "n": len(values),
        "min": values[0],
        "median": statistics.median(values),
        "p95": percentile(values, 95),
        "max": values[-1],
    }


def read_ints(path):
    try:
        with open(path) as f:
            return [int(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def line_count(path):
    try:
        with open(path) as f:
            return sum(1 for line in f if line.strip())
    except FileNotFoundError:
        return 0


def wait_until(predicate, timeout, what, interval=0.005):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


class HarnessError(Exception):
    pass


class NotMeasured(Exception):
    """A figure (or part) that cannot be measured here, with the reason; not a harness failure."""


# ---------------------------------------------------------------------------------------------
# processes


# ---------------------------------------------------------------------------------------------
# etcd


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Etcd:
    """A throwaway single-member etcd and a tiny JSON-gateway client for the harness itself."""

    def __init__(self, procs, tmp):
        self.procs = procs
        self.tmp = tmp
        self.proc = None
        self.port = None
        self.endpoint = None
        self.conn = None

    def start(self):
        for attempt in range(1, 4):
            self.port, peer = free_port(), free_port()
            self.endpoint = f"http://127.0.0.1:{self.port}"
            data = os.path.join(self.tmp, f"etcd-data-{attempt}")
            log_path = os.path.join(self.tmp, "etcd.log")
            self.proc = self.procs.spawn(
                [
                    "etcd",
                    "--name", "bench",
                    "--data-dir", data,
                    "--listen-client-urls", self.endpoint,
                    "--advertise-client-urls", self.endpoint,
                    "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                    "--initial-cluster", f"bench=http://127.0.0.1:{peer}",
                    "--initial-cluster-state", "new",
                    "--logger", "zap", "--log-outputs", "stderr", "--log-level", "error",
                ],
                log_path=log_path,
            )
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    body = self.get("/health")
                    if json.loads(body).get("health") == "true":
                        self.conn = None
                        return
                except (OSError, http.client.HTTPException, ValueError):
                    pass
                time.sleep(0.1)
            log(f"etcd attempt {attempt} failed; log tail:\n{tail(log_path)}")
            self.stop()
        raise HarnessError("etcd did not start")

    def stop(self):
        if self.proc is not None:
            self.procs.kill_session(self.proc.pid)
            self.procs.reap(self.proc, 5)
            self.proc = None

    def _request(self, method, path, body=None):
        for attempt in range(2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                data = response.read()
                if response.status != 200:
                    raise HarnessError(f"etcd {path}: HTTP {response.status}: {data[:300]!r}")
                return data
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 1:
                    raise

    def get(self, path):
        return self._request("GET", path)

    def post(self, path, payload):
        return json.loads(self._request("POST", path, json.dumps(payload)))

    def keys(self, prefix):
        answer = self.post(
            "/v3/kv/range",
            {"key": b64(prefix), "range_end": b64(prefix_end(prefix)), "keys_only": True},
        )
        return [base64.b64decode(kv["key"]).decode() for kv in answer.get("kvs", [])]

    def count(self, prefix):
        answer = self.post(
            "/v3/kv/range",
            {"key": b64(prefix), "range_end": b64(prefix_end(prefix)), "count_only": True},
        )
        return int(answer.get("count", 0))

    def revision(self):
        return int(self.post("/v3/kv/range", {"key": b64("\0")})["header"]["revision"])

    def leases(self):
        answer = self.post("/v3/lease/leases", {})
        return {int(item["ID"]) for item in answer.get("leases", [])}

    def metrics(self):
        """Parses /metrics into {(name, frozenset(labels)): value} for the families we use."""
        wanted = (
            "grpc_server_handled_total",
            "grpc_server_started_total",
            "grpc_server_msg_received_total",
            "grpc_server_msg_sent_total",
            "etcd_server_proposals_committed_total",
        )
        text = self.get("/metrics").decode()
        out = {}
        for line in text.splitlines():
            if not line.startswith(wanted):
                continue
            match = re.match(r"^([a-zA-Z_:]+)(\{(.*)\})?\s+(\S+)$", line)
            if not match:
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(3) or ""))
            out[(match.group(1), frozenset(labels.items()))] = float(match.group(4))
        return out


def metric_delta(before, after):
    """Per-method deltas: {method: {type, started, handled, received, sent}} plus proposals."""
    methods = {}
    proposals = 0.0
    short = {
        "grpc_server_started_total": "started",
        "grpc_server_handled_total": "handled",
        "grpc_server_msg_received_total": "received",
        "grpc_server_msg_sent_total": "sent",
    }
    for key, value in after.items():
        delta = value - before.get(key, 0.0)
        name, labels = key
        if name == "etcd_server_proposals_committed_total":
            proposals += delta
            continue
        labels = dict(labels)
        method = labels.get("grpc_method", "?")
        service = labels.get("grpc_service", "?")
        if not service.startswith("etcdserverpb."):
            method = f"{service}/{method}"  # grpc.health.v1.Health has a "Watch" method too
        entry = methods.setdefault(
            method,
            {"type": labels.get("grpc_type", "?"), "started": 0, "handled": 0, "received": 0,
             "sent": 0},
        )
        entry[short[name]] += delta
    methods = {
        m: {k: (int(v) if isinstance(v, float) else v) for k, v in e.items()}
        for m, e in methods.items()
        if any(e[k] for k in ("started", "handled", "received", "sent"))
    }
    return methods, int(proposals)


def unary_requests(methods):
    return sum(e["handled"] for e in methods.values() if e["type"] == "unary")


class PrefixWatcher:
    """Watches a prefix through the gateway on a thread and timestamps every event on arrival."""

    def __init__(self, port, prefix, start_revision):
        self.events = []  # (time_ns, type, key)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=None)
        body = json.dumps(
            {
                "create_request": {
                    "key": b64(prefix),
                    "range_end": b64(prefix_end(prefix)),
                    "start_revision": str(start_revision),
                }
            }
        )
        self.conn.request("POST", "/v3/watch", body=body,
                          headers={"Content-Type": "application/json"})
        self.sock = self.conn.sock
        self.response = self.conn.getresponse()
        first = self.response.readline()
        if b'"created":true' not in first:
            raise HarnessError(f"watch not created: {first[:200]!r}")
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while True:
                line = self.response.readline()
                now = time.time_ns()
                if not line:
                    return
                message = json.loads(line).get("result", {})
                for event in message.get("events", []):
                    key = base64.b64decode(event["kv"]["key"]).decode()
                    self.events.append((now, event.get("type", "PUT"), key))
        except Exception:  # the stream ended or close() shut the socket down under us
            return

    def first_delete(self, key):
        for stamp, kind, k in self.events:
            if kind == "DELETE" and k == key:
                return stamp
        return None

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(2)
        self.conn.close()


class CountingRelay:
    """A TCP relay in front of etcd that counts the HTTP/1.1 requests passing through it by path,
    so that figure 6 can tell the leader's gateway requests from the waiters' (each role gets a
    relay of its own). Only our wrapper can be counted this way: etcdctl speaks gRPC over HTTP/2,
    whose paths are HPACK-compressed. Bytes are forwarded before they are parsed."""

    REQUEST_LINE = re.compile(rb"(?:GET|POST|PUT|DELETE) (/[^ \r\n]*) HTTP/1\.[01]$")

    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.counts = {}
        self.lock = threading.Lock()
        self.sockets = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.sockets += [client, upstream]
                self.counts[CONNECTIONS] = self.counts.get(CONNECTIONS, 0) + 1
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src, dst, count):
        pending = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    return
                dst.sendall(data)
                if not count:
                    continue
                # A request body has no line end of its own: the next request line follows it
                # directly, hence search() at the end of each line, not match().
                *lines, pending = (pending + data).split(b"\r\n")
                for line in lines:
                    found = self.REQUEST_LINE.search(line)
                    if found:
                        path = found.group(1).decode(errors="replace")
                        with self.lock:
                            self.counts[path] = self.counts.get(path, 0) + 1
                pending = pending[-4096:]
        except OSError:
            return
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def snapshot(self):
        with self.lock:
            return dict(self.counts)

    def close(self):
        self.listener.close()
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


STREAM_PATHS = ("/v3/lease/keepalive", "/v3/watch")
CONNECTIONS = "(TCP connections opened)"


def path_delta(before, after):
    """Requests per path between two CountingRelay snapshots, split into unary and streams, and
    the TCP connections opened meanwhile."""
    paths = {p: after[p] - before.get(p, 0) for p in after if after[p] - before.get(p, 0)}
    connections = paths.pop(CONNECTIONS, 0)
    unary = sum(n for p, n in paths.items() if p not in STREAM_PATHS)
    return {"paths": paths, "unary": unary, "connections": connections,
            "keepalive": paths.get("/v3/lease/keepalive", 0), "watch": paths.get("/v3/watch", 0)}


# ---------------------------------------------------------------------------------------------
# the two tools


TOOLS = ("ours", "etcdctl")


class Tools:
    def __init__(self, procs, etcd, tmp, binary, static_binary=None):
        self.procs = procs
        self.etcd = etcd
        self.tmp = tmp
        self.binaries = {"ours": binary, "ours-static": static_binary}
        base = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_AWAIT_ELECTION_")
                and not k.startswith("ETCDCTL_")}
        self.base_env = base
        self.serial = 0

    def spawn(self, tool, lock, child, lease=5, renew="3", retry="1", tag="x", endpoint=None):
        """Starts one candidate of `tool` on `lock` running `sh -c child`. `renew` or `retry` None
        leaves that variable unset (our default); `endpoint` replaces etcd's (a counting relay)."""
        self.serial += 1
        log_path = os.path.join(self.tmp, "logs", f"{tag}-{tool}-{self.serial}.log")
        env = dict(self.base_env)
        endpoint = endpoint or self.etcd.endpoint
        if tool != "etcdctl":
            env.update(
                {
                    "ETCD_AWAIT_ELECTION_LOCK_NAME": lock,
                    "ETCD_AWAIT_ELECTION_IDENTITY": f"{tag}-{self.serial}",
                    "ETCD_AWAIT_ELECTION_ENDPOINTS": endpoint,
                    "ETCD_AWAIT_ELECTION_LEASE_DURATION": str(lease),
                }
            )
            if renew is not None:
                env["ETCD_AWAIT_ELECTION_RENEW_DEADLINE"] = renew
            if retry is not None:
                env["ETCD_AWAIT_ELECTION_RETRY_PERIOD"] = retry
            argv = [self.binaries[tool], "sh", "-c", child]
        else:
            env["ETCDCTL_API"] = "3"
            argv = ["etcdctl", f"--endpoints={endpoint}", "lock", f"--ttl={lease}",
                    lock, "--", "sh", "-c", child]  # without "--" cobra eats "-c"
        proc = self.procs.spawn(argv, env=env, log_path=log_path)
        proc.tool = tool
        proc.log_path = log_path
        return proc

    def stop(self, proc):
        """The graceful stop of each tool: SIGTERM to our wrapper (it forwards to the child and
        revokes its lease); SIGTERM to etcdctl's process group (etcdctl does not forward signals to
        its command, and waits for it before unlocking)."""
        try:
            if proc.tool != "etcdctl":
                os.kill(proc.pid, signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def stop_all(self, procs, timeout=15):
        for proc in procs:
            self.stop(proc)
        deadline = time.monotonic() + timeout
        for proc in procs:
            left = max(0.1, deadline - time.monotonic())
            if not self.procs.reap(proc, left):
                log(f"{proc.tool} pid {proc.pid} ignored SIGTERM for {timeout}s; killing it")
        for proc in procs:
            self.procs.kill_session(proc.pid)
            self.procs.reap(proc, 5)

    def queue(self, tool, lock, child, position, **kwargs):
        """Starts a candidate and waits until its key exists (it holds place `position`)."""
        proc = self.spawn(tool, lock, child, **kwargs)
        prefix = f"{lock}/"

        def joined():
            if proc.poll() is not None:
                raise HarnessError(f"{tool} exited with {proc.returncode} before joining {lock}:\n"
                                   f"{tail(proc.log_path)}")
            return self.etcd.count(prefix) >= position + 1

        wait_until(joined, 30, f"{tool} candidate {position} to join {lock}")
        return proc


def tail(path, lines=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def sh_quote(path):
    return "'" + path.replace("'", "'\\''") + "'"


# ---------------------------------------------------------------------------------------------
# results


class Results:
    def __init__(self):
        self.rows = []
        self.details = {}
        self.notes = []

    def add(self, figure, tool, values, unit, target="—", met=None, scale=1.0, digits=2):
        stats = summarize([v * scale for v in values])
        row = {"figure": figure, "tool": tool, "unit": unit, "target": target}
        if stats is None:
            row.update({"n": 0, "min": None, "median": None, "p95": None, "max": None,
                        "met": "not measured: no samples"})
        else:
            row.update(stats)
            row["met"] = met(stats) if callable(met) else (met if met is not None else "—")
            if isinstance(row["met"], bool):
                row["met"] = "yes" if row["met"] else "NO"
        row["digits"] = digits
        row["samples"] = [v * scale for v in values]
        self.rows.append(row)
        return row

    def not_measured(self, figure, tool, unit, target, reason):
        self.rows.append({"figure": figure, "tool": tool, "n": 0, "min": None, "median": None,
                          "p95": None, "max": None, "unit": unit, "target": target,
                          "met": f"not measured: {reason}", "digits": 2, "samples": []})

    def find(self, figure, tool):
        for row in self.rows:
            if row["figure"] == figure and row["tool"] == tool and row["n"]:
                return row
        return None

    def table(self):
        head = ["figure", "tool", "n", "min", "median", "p95", "max", "unit", "target", "met?"]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows:
            def fmt(v, digits=row["digits"]):
                if v is None:
                    return "—"
                if isinstance(v, int) or float(v).is_integer() and digits == 0:
                    return f"{int(v)}"
                return f"{v:.{digits}f}"
            cells = [row["figure"], row["tool"], str(row["n"]), fmt(row["min"]),
                     fmt(row["median"]), fmt(row["p95"]), fmt(row["max"]), row["unit"],
                     row["target"], row["met"]]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# the figures


class Bench:
    def __init__(self, args, procs, etcd, tools, results):
        self.args = args
        self.quick = args.quick
        self.procs = procs
        self.etcd = etcd
        self.tools = tools
        self.results = results
        self.tmp = args.tmp
        self.failures = []
        self.revoked_leftovers = 0

    def dir(self, name):
        path = os.path.join(self.tmp, name)
        os.makedirs(path, exist_ok=True)
        return path

    def quiesce(self):
        """Called between measurements, when no instance runs: revokes every lease left in etcd.
        etcdctl lock never revokes its session lease (figure 6 reports that), and the expiry of such
        a lease (a raft proposal, a key deletion) must not land in the next measurement window.
        Revoking them here instead of waiting up to a TTL keeps --quick short."""
        left = self.etcd.leases()
        for lease in left:
            self.etcd.post("/v3/lease/revoke", {"ID": str(lease)})
        if self.etcd.leases():
            raise HarnessError("leases survived their revocation")
        self.revoked_leftovers += len(left)

    def run_figure(self, name, function):
        log(f"figure {name}")
        started = time.monotonic()
        try:
            self.quiesce()
            function()
        except NotMeasured as reason:
            log(f"figure {name}: not measured: {reason}")
        except HarnessError as error:
            log(f"figure {name} FAILED: {error}")
            self.failures.append(f"figure {name}: {error}")
            self.results.not_measured(name, "—", "—", "—", f"harness failure: {error}"[:300])
        except Exception as error:  # a bug in the harness: report it and go on with the others
            traceback.print_exc()
            self.failures.append(f"figure {name}: {error!r}")
            reason = f"harness failure: {error!r}"[:300]
            self.results.not_measured(name, "—", "—", "—", reason)
        log(f"figure {name} took {time.monotonic() - started:.1f}s")

    # -- 0: what a timestamp costs --------------------------------------------------------------

    def fig0_calibration(self):
        n = 10 if self.quick else 30
        d = self.dir("f0")
        spawn, fork = [], []
        for i in range(n):
            path = os.path.join(d, f"spawn-{i}")
            t0 = time.time_ns()
            subprocess.run(["sh", "-c", f"date +%s%N >> {sh_quote(path)}"], check=True)
            spawn.append((read_ints(path)[0] - t0) / NS_PER_MS)
            path = os.path.join(d, f"fork-{i}")
            stamp = f"date +%s%N >> {sh_quote(path)}"
            subprocess.run(["sh", "-c", f"{stamp}; {stamp}"], check=True)
            a, b = read_ints(path)
            fork.append((b - a) / NS_PER_MS)
        self.results.add("0 calibration: Python Popen ⇒ `sh -c date` timestamp", "harness", spawn,
                         "ms", "— (in figure 3)")
        self.results.add("0 calibration: one `date +%s%N` fork inside sh", "harness", fork, "ms",
                         "— (in figures 1, 2b, 7)")

    # -- 1: graceful handover chains --------------------------------------------------------------

    def chain(self, tool, round_no, length, hold):
        """`length` handovers: a head whose child waits on a FIFO, then `length` candidates whose
        children hold for `hold` seconds. Returns the handover latencies in ms."""
        self.quiesce()
        d = self.dir(f"f1/{tool}-{round_no}")
        starts, ends, fifo = (os.path.join(d, x) for x in ("starts", "ends", "go"))
        os.mkfifo(fifo)
        lock = f"f1-{tool}-{round_no}"
        start, end = f"date +%s%N >> {sh_quote(starts)}", f"date +%s%N >> {sh_quote(ends)}"
        head = f"{start}; read _ < {sh_quote(fifo)}; {end}"
        body = f"{start}; sleep {hold}; {end}"
        procs = []
        watcher = None
        try:
            procs.append(self.tools.queue(tool, lock, head, 0, tag="f1"))
            wait_until(lambda: line_count(starts) >= 1, 20, f"{tool}: head's child to start")
            # An observer on the lock's prefix splits each handover at the moment etcd reports the
            # old leader's key deleted (the observer's receive time: an upper bound).
            watcher = PrefixWatcher(self.etcd.port, f"{lock}/", self.etcd.revision() + 1)
            for i in range(1, length + 1):
                procs.append(self.tools.queue(tool, lock, body, i, tag="f1"))
            time.sleep(0.3)  # let the last waiters settle on their watches
            release_fifo(fifo)
            timeout = 20 + length * (hold + 5)
            wait_until(lambda: line_count(ends) >= length + 1, timeout,
                       f"{tool}: {length} handovers", interval=0.05)
            for proc in procs:
                if not self.procs.reap(proc, 10):
                    raise HarnessError(f"{tool} pid {proc.pid} did not exit after its child")
            time.sleep(0.05)
        finally:
            if watcher:
                watcher.close()
            self.tools.stop_all([p for p in procs if p.poll() is None])
        s, e = sorted(read_ints(starts)), sorted(read_ints(ends))
        # Candidates lead in queue order and each deletes only its own key, once: the i-th DELETE
        # the observer saw is the key of the i-th leader.
        deletes = sorted(t for t, kind, _ in watcher.events if kind == "DELETE")
        total, resign, acquire = [], [], []
        for i in range(length):
            if s[i + 1] < e[i]:
                self.overlaps[tool] += 1
            total.append((s[i + 1] - e[i]) / NS_PER_MS)
            if len(deletes) > i:
                resign.append((deletes[i] - e[i]) / NS_PER_MS)
                acquire.append((s[i + 1] - deletes[i]) / NS_PER_MS)
        return total, resign, acquire

    def fig1_handover(self):
        rounds, length = (1, 5) if self.quick else (5, 10)
        hold = 0.2
        self.overlaps = {t: 0 for t in TOOLS}
        samples = {t: [] for t in TOOLS}
        resign = {t: [] for t in TOOLS}
        acquire = {t: [] for t in TOOLS}
        for r in range(rounds):
            for tool in TOOLS:
                total, a, b = self.chain(tool, r, length, hold)
                samples[tool] += total
                resign[tool] += a
                acquire[tool] += b
        theirs = statistics.median(samples["etcdctl"])
        self.results.add(
            "1 graceful handover (child exit ⇒ next child start)", "ours", samples["ours"], "ms",
            f"≤ 3 ms and ≤ 0.6× etcdctl ({0.6 * theirs:.2f} ms)",
            met=lambda s: s["median"] <= 3.0 and s["median"] <= 0.6 * theirs)
        self.results.add("1 graceful handover (child exit ⇒ next child start)", "etcdctl",
                         samples["etcdctl"], "ms", "(reference)")
        self.ratio_rows("1 graceful handover", samples["ours"], samples["etcdctl"],
                        median_target=0.8, p95_target=1.0)
        for tool in TOOLS:
            self.results.add("1a split: child exit ⇒ old key deleted (seen by an observer watch)",
                             tool, resign[tool], "ms", "— (diagnostic)")
            self.results.add("1b split: old key deleted (seen) ⇒ next child start", tool,
                             acquire[tool], "ms", "— (diagnostic)")
            negative = sum(1 for v in acquire[tool] if v < 0)
            if negative:
                self.results.notes.append(
                    f"figure 1b: {tool}: in {negative} handovers the next child started before the "
                    "observer's watch delivered the deletion (negative 1b): the observer is a "
                    "gateway watch in Python, itself a little late")
        self.results.details["fig1"] = {"rounds": rounds, "handovers_per_round": length,
                                        "child_hold_s": hold, "overlapping_children": self.overlaps}
        for tool in TOOLS:
            if self.overlaps[tool]:
                self.results.notes.append(
                    f"figure 1: {tool}: {self.overlaps[tool]} handovers where the next child started "
                    "before the previous one ended (mutual exclusion violated!)")

    # -- 2: crash failover ------------------------------------------------------------------------

    def crash_trial(self, tool, i):
        self.quiesce()
        d = self.dir(f"f2/{tool}-{i}")
        lock = f"f2-{tool}-{i}"
        starts = os.path.join(d, "starts")
        child = f"date +%s%N >> {sh_quote(starts)}; exec sleep 600"
        timing = {"lease": 2, "renew": "1500ms", "retry": "500ms", "tag": "f2"}
        procs = []
        watcher = None
        try:
            leader = self.tools.queue(tool, lock, child, 0, **timing)
            procs.append(leader)
            wait_until(lambda: line_count(starts) >= 1, 20, f"{tool}: leader's child")
            leader_key = self.etcd.keys(f"{lock}/")[0]
            follower = self.tools.queue(tool, lock, child, 1, **timing)
            procs.append(follower)
            watcher = PrefixWatcher(self.etcd.port, f"{lock}/", self.etcd.revision() + 1)
            # A random pause, so that the kill falls at a random point of the keepalive cycle and of
            # etcd's 500 ms expiry check instead of always at the same phase.
            time.sleep(0.5 + random.random())
            victims = self.procs.members(leader.pid)
            t_kill = time.time_ns()
            for pid in victims:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.procs.kill_session(leader.pid)  # anything forked meanwhile
            wait_until(lambda: line_count(starts) >= 2, 20, f"{tool}: follower's child after crash",
                       interval=0.01)
            t_start = sorted(read_ints(starts))[1]
            t_deleted = wait_until(lambda: watcher.first_delete(leader_key), 5,
                                   "the watch to report the deletion")
        finally:
            if watcher:
                watcher.close()
            self.tools.stop_all([p for p in procs if p.poll() is None])
            for p in procs:
                self.procs.kill_session(p.pid)
        return ((t_deleted - t_kill) / NS_PER_MS, (t_start - t_deleted) / NS_PER_MS,
                (t_start - t_kill) / NS_PER_MS)

    def fig2_crash(self):
        n = 2 if self.quick else 5
        parts = {t: ([], [], []) for t in TOOLS}
        for i in range(n):
            for tool in TOOLS:
                for bucket, value in zip(parts[tool], self.crash_trial(tool, i)):
                    bucket.append(value)
        for tool in TOOLS:
            a, b, total = parts[tool]
            self.results.add("2a crash (LEASE=2): kill -9 ⇒ key deleted by etcd", tool, a, "ms",
                             "— (lease expiry)")
            self.results.add("2b crash (LEASE=2): key deleted ⇒ follower's child started", tool, b,
                             "ms", "≤ 3 ms" if tool == "ours" else "(reference)",
                             met=(lambda s: s["median"] <= 3.0) if tool == "ours" else None)
            self.results.add("2 crash (LEASE=2): kill -9 ⇒ follower's child started", tool, total,
                             "ms", "—")

    # -- 3: start-up ------------------------------------------------------------------------------

    def ratio_rows(self, name, ours, theirs, median_target, p95_target=None, tool="ours"):
        """Issue 13's goals: ours over etcdctl's, median (and p95), from samples of one run."""
        if not ours or not theirs:
            return
        median = statistics.median(ours) / statistics.median(theirs)
        self.results.add(f"{name}: median ratio {tool}/etcdctl", f"{tool}/etcdctl", [median], "×",
                         f"≤ {median_target}", met=median <= median_target, digits=2)
        if p95_target is not None:
            p95 = summarize(ours)["p95"] / summarize(theirs)["p95"]
            self.results.add(f"{name}: p95 ratio {tool}/etcdctl", f"{tool}/etcdctl", [p95], "×",
                             f"≤ {p95_target}", met=p95 <= p95_target, digits=2)

    def fig3_startup(self):
        n = 5 if self.quick else 30
        # The static musl build (what the releases ship), when present and not already the binary
        # under test, starts alongside: it has no dynamic loader to run.
        tools = list(TOOLS)
        static = self.tools.binaries["ours-static"]
        if static and os.path.realpath(static) != os.path.realpath(self.args.bin):
            tools.insert(1, "ours-static")
        samples = {t: [] for t in tools}
        d = self.dir("f3")
        for i in range(n):
            for tool in tools:
                path = os.path.join(d, f"{tool}-{i}")
                self.quiesce()
                t0 = time.time_ns()
                proc = self.tools.spawn(tool, f"f3-{tool}-{i}", f"date +%s%N >> {sh_quote(path)}",
                                        tag="f3")
                try:
                    wait_until(lambda: line_count(path) >= 1, 20, f"{tool}: uncontended child",
                               interval=0.002)
                    if not self.procs.reap(proc, 10):
                        raise HarnessError(f"{tool} did not exit after its child")
                finally:
                    if proc.poll() is None:
                        self.tools.stop_all([proc])
                samples[tool].append((read_ints(path)[0] - t0) / NS_PER_MS)
        self.results.add("3 start-up: exec ⇒ child exec (uncontended)", "ours", samples["ours"], "ms",
                         "≤ 5 ms", met=lambda s: s["median"] <= 5.0)
        if "ours-static" in samples:
            self.results.add("3 start-up: exec ⇒ child exec (uncontended)", "ours-static",
                             samples["ours-static"], "ms", "≤ 5 ms",
                             met=lambda s: s["median"] <= 5.0)
        self.results.add("3 start-up: exec ⇒ child exec (uncontended)", "etcdctl",
                         samples["etcdctl"], "ms", "(reference)")
        for tool in [t for t in tools if t != "etcdctl"]:
            self.ratio_rows("3 start-up", samples[tool], samples["etcdctl"], median_target=0.35,
                            tool=tool)

    # -- 4 + 5: memory and idle CPU ---------------------------------------------------------------

    def fig45_idle(self):
        window = 5 if self.quick else 60
        step = 1 if self.quick else 10
        child = "exec sleep 100000"
        instances = {}
        # Both tools side by side in one window: same machine state for both. The static musl build,
        # when present and not already the binary under test, is measured alongside.
        tools = list(TOOLS)
        static = self.tools.binaries["ours-static"]
        if static and os.path.realpath(static) != os.path.realpath(self.args.bin):
            tools.insert(1, "ours-static")
        try:
            for tool in tools:
                lock = f"f45-{tool}"
                leader = self.tools.queue(tool, lock, child, 0, tag="f45")
                waiter = self.tools.queue(tool, lock, child, 1, tag="f45")
                instances[(tool, "leading")] = leader
                instances[(tool, "waiting")] = waiter
            time.sleep(1.0)
            tick = os.sysconf("SC_CLK_TCK")
            series = {key: {"hwm_kib": [], "rss_kib": [], "cpu_ticks": [], "sched_ns": [], "t": []}
                      for key in instances}
            t0 = time.monotonic()
            for k in range(window // step + 1):
                wait = t0 + k * step - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                for key, proc in instances.items():
                    if proc.poll() is not None:
                        raise HarnessError(f"{key} exited with {proc.returncode}:\n"
                                           f"{tail(proc.log_path)}")
                    status = read_status(proc.pid)
                    fields = proc_stat_fields(proc.pid)
                    s = series[key]
                    s["t"].append(round(time.monotonic() - t0, 3))
                    s["hwm_kib"].append(status["VmHWM"])
                    s["rss_kib"].append(status["VmRSS"])
                    s["cpu_ticks"].append(int(fields[11]) + int(fields[12]))  # utime + stime
                    s["sched_ns"].append(sched_ns(proc.pid))
        finally:
            self.tools.stop_all(list(instances.values()))
        for role in ("waiting", "leading"):
            for tool in tools:
                s = series[(tool, role)]
                mb = [kib * 1024 / 1e6 for kib in s["hwm_kib"]]
                ours = tool != "etcdctl"
                self.results.add(f"4 peak RSS (VmHWM) {role}, sampled every {step}s for {window}s",
                                 tool, mb, "MB", "≤ 3 MB" if ours else "(reference)",
                                 met=(lambda st: st["max"] <= 3.0) if ours else None)
        for role in ("waiting", "leading"):
            for tool in tools:
                s = series[(tool, role)]
                rates = []
                for j in range(1, len(s["t"])):
                    dt = s["t"][j] - s["t"][j - 1]
                    rates.append((s["cpu_ticks"][j] - s["cpu_ticks"][j - 1]) / tick / dt * 100)
                wall = s["t"][-1] - s["t"][0]
                whole = (s["cpu_ticks"][-1] - s["cpu_ticks"][0]) / tick / wall * 100
                precise = (s["sched_ns"][-1] - s["sched_ns"][0]) / 1e9 / wall * 100
                self.results.add(
                    f"5 CPU idle {role}, per {step}s interval (whole {window}s: {whole:.3f} % by "
                    f"/proc/PID/stat, {precise:.4f} % by schedstat)", tool,
                    rates, "% of a core", "≤ 0.05 %" if tool != "etcdctl" else "(reference)",
                    met=(lambda st, w=whole: w <= 0.05) if tool != "etcdctl" else None, digits=3)
        self.results.details["fig45"] = {
            f"{tool}/{role}": series[(tool, role)] for tool, role in series
        }
        self.results.notes.append(
            f"figures 4/5: both tools ran side by side in the same {window}s window (leader + waiter "
            f"each, own locks); CPU is utime+stime of the wrapper/etcdctl process only (not its child), "
            f"from /proc/PID/stat in {1000 // tick} ms ticks, so one {step}s interval resolves "
            f"{100 / tick / step:.3f} % and the whole window {100 / tick / window:.4f} %; the "
            f"schedstat figure sums /proc/PID/task/*/schedstat (ns, threads alive at both ends).")

    # -- 6: etcd load -----------------------------------------------------------------------------

    def fig6_load(self):
        window = 6 if self.quick else 30
        waiters = 5
        interval = 1.0  # the leader's keepalive interval at LEASE 5, RETRY 1: min(1 s, 5 s / 3)
        detail = {}
        for tool in TOOLS:
            lock = f"f6-{tool}"
            child = "exec sleep 100000"
            self.quiesce()
            leases_before = self.etcd.leases()
            procs = []
            # Our wrapper's requests pass through one counting relay per role, so that the
            # leader's own-key reads can be told from the waiters' requests.
            relays = {}
            if tool == "ours":
                relays = {"leader": CountingRelay(self.etcd.port),
                          "waiters": CountingRelay(self.etcd.port)}
            try:
                for i in range(waiters + 1):
                    relay = relays.get("leader" if i == 0 else "waiters")
                    procs.append(self.tools.queue(tool, lock, child, i, tag="f6",
                                                  endpoint=relay.endpoint if relay else None))
                time.sleep(2.0)  # everyone joined and settled; nothing changes from here on
                before = self.etcd.metrics()
                counted_before = {role: r.snapshot() for role, r in relays.items()}
                time.sleep(window)
                counted_after = {role: r.snapshot() for role, r in relays.items()}
                after = self.etcd.metrics()
                for proc in procs:
                    if proc.poll() is not None:
                        raise HarnessError(
                            f"{tool} exited during the window:\n{tail(proc.log_path)}")
            finally:
                self.tools.stop_all(procs)
                for relay in relays.values():
                    relay.close()
            time.sleep(0.5)
            leftover = sorted(self.etcd.leases() - leases_before)
            methods, proposals = metric_delta(before, after)
            roles = {role: path_delta(counted_before[role], counted_after[role])
                     for role in relays}
            detail[tool] = {"window_s": window, "instances": waiters + 1, "methods": methods,
                            "proposals_committed": proposals, "by_role": roles,
                            "leases_left_after_exit": [f"{x:x}" for x in leftover]}
            label = f"({waiters + 1} instances, {window}s)"
            ka = methods.get("LeaseKeepAlive", {})
            self.results.add(f"6 LeaseKeepAlive messages received {label}", tool,
                             [ka.get("received", 0)], "msgs", "keepalives only", digits=0)
            unary = unary_requests(methods)
            # Since the leader reads its own key once per keepalive interval (a preemption is
            # noticed even when its watch is dead), a leader makes window/interval unary reads;
            # waiters make none.
            reads = math.floor(window / interval) + 1
            self.results.add(
                f"6 unary requests (Range/Txn/Put/DeleteRange/LeaseGrant/…) {label}", tool,
                [unary], "requests", f"leader ≤ 1 per {interval:.0f}s keepalive interval "
                f"(≤ {reads}), waiters 0", met=unary <= reads, digits=0)
            if roles:
                self.results.add(f"6 unary requests of the leader {label}", tool,
                                 [roles["leader"]["unary"]], "requests",
                                 f"≤ {reads} (own-key reads)",
                                 met=roles["leader"]["unary"] <= reads, digits=0)
                self.results.add(f"6 unary requests of the {waiters} waiters {label}", tool,
                                 [roles["waiters"]["unary"]], "requests", "0",
                                 met=roles["waiters"]["unary"] == 0, digits=0)
                counted = roles["leader"]["unary"] + roles["waiters"]["unary"]
                if counted != unary:
                    self.results.notes.append(
                        f"figure 6: {tool}: the relays counted {counted} unary gateway requests, "
                        f"etcd's metrics {unary} (a request in flight at a window's edge)")
            else:
                self.results.not_measured(
                    f"6 unary requests of the leader {label}", tool, "requests", "—",
                    f"not split: gRPC over HTTP/2 cannot be counted per process here; the total "
                    f"is {unary}")
            self.results.add(f"6 proposals committed {label}", tool, [proposals], "proposals", "0",
                             met=proposals == 0, digits=0)
            watch = methods.get("Watch", {})
            self.results.add(f"6 Watch streams started {label}", tool, [watch.get("started", 0)],
                             "streams", "— (reported)", digits=0)
            self.results.add(f"6 Watch messages received+sent {label}", tool,
                             [watch.get("received", 0) + watch.get("sent", 0)], "msgs",
                             "— (reported)", digits=0)
            self.results.add("6 leases left 0.5 s after all exited", tool, [len(leftover)], "leases",
                             "0", met=len(leftover) == 0, digits=0)
        self.results.details["fig6"] = detail

    # -- 7: herd ----------------------------------------------------------------------------------

    def herd(self, tool, waiters, handovers):
        self.quiesce()
        d = self.dir(f"f7/{tool}")
        starts, ends = os.path.join(d, "starts"), os.path.join(d, "ends")
        for k in range(1, waiters + 2):
            os.mkfifo(os.path.join(d, f"go.{k}"))
        child = (f"date +%s%N >> {sh_quote(starts)}; n=$(wc -l < {sh_quote(starts)}); "
                 f"read _ < {sh_quote(d)}/go.$n; date +%s%N >> {sh_quote(ends)}")
        lock = f"f7-{tool}"
        timing = {"lease": 10, "renew": "7", "retry": "3", "tag": "f7"}
        procs = []
        latencies, wakes, watch_sent, baseline_watch = [], [], [], []
        deltas = []
        try:
            procs.append(self.tools.queue(tool, lock, child, 0, **timing))
            wait_until(lambda: line_count(starts) >= 1, 20, f"{tool}: herd leader's child")
            started = time.monotonic()
            # Joins are paced over one keepalive interval (3 s), so that keepalives (and watch
            # re-establishments) spread out instead of arriving in one burst.
            pace = (1.0 if self.quick else 3.0) / waiters
            for i in range(1, waiters + 1):
                procs.append(self.tools.queue(tool, lock, child, i, **timing))
                left = started + i * pace - time.monotonic()
                if left > 0:
                    time.sleep(left)
            join_s = time.monotonic() - started
            log(f"{tool}: {waiters} waiters joined in {join_s:.1f}s")
            time.sleep(1.0 if self.quick else 3.0)
            span = 1.0
            for h in range(1, handovers + 1):
                # Baseline: the same span with no handover (keepalives, watch re-establishments).
                m0 = self.etcd.metrics()
                time.sleep(span)
                m1 = self.etcd.metrics()
                base, _ = metric_delta(m0, m1)
                t_release = time.monotonic()
                release_fifo(os.path.join(d, f"go.{h}"))
                wait_until(lambda: line_count(starts) >= h + 1, 30, f"{tool}: herd handover {h}",
                           interval=0.002)
                left = span - (time.monotonic() - t_release)
                if left > 0:
                    time.sleep(left)
                m2 = self.etcd.metrics()
                during, _ = metric_delta(m1, m2)
                s, e = sorted(read_ints(starts)), sorted(read_ints(ends))
                latencies.append((s[h] - e[h - 1]) / NS_PER_MS)
                get = lambda m, method, field: m.get(method, {}).get(field, 0)
                wakes.append(get(during, "Txn", "handled") + get(during, "Range", "handled")
                             - get(base, "Txn", "handled") - get(base, "Range", "handled"))
                # Watch messages that are not the "created" answer of a new stream: events.
                events = lambda m: get(m, "Watch", "sent") - get(m, "Watch", "started")
                watch_sent.append(events(during) - events(base))
                baseline_watch.append(get(base, "Watch", "sent"))
                deltas.append({"baseline": base, "handover": during})
                time.sleep(0.3)
        finally:
            t = time.monotonic()
            self.tools.stop_all(procs, timeout=30)
            log(f"{tool}: herd torn down in {time.monotonic() - t:.1f}s")
        return latencies, wakes, watch_sent, baseline_watch, deltas, join_s

    def fig7_herd(self):
        waiters = 30 if self.quick else 200
        handovers = 2 if self.quick else 5
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        need = 4 * waiters + 256
        if soft < need and hard >= need:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
            soft = need
        if soft < need:
            raise NotMeasured(f"ulimit -n is {soft}, {need} needed")
        detail = {"waiters": waiters, "handovers": handovers, "ulimit_n": soft,
                  "lease": 10, "renew": 7, "retry": 3}
        for tool in TOOLS:
            try:
                lat, wakes, sent, base, deltas, join_s = self.herd(tool, waiters, handovers)
            except HarnessError as error:
                if tool == "etcdctl":
                    self.results.not_measured(f"7 herd ({waiters} waiters)", tool, "—", "—",
                                              f"etcdctl herd failed: {error}"[:300])
                    continue
                raise
            detail[tool] = {"join_s": round(join_s, 2), "per_handover": deltas}
            f1 = self.results.find("1 graceful handover (child exit ⇒ next child start)", tool)
            if f1:
                bound = 2 * f1["median"]
                self.results.add(f"7 herd: handover latency ({waiters} waiters, LEASE=10)", tool,
                                 lat, "ms", f"≤ 2× fig. 1 median ({bound:.2f} ms)",
                                 met=lambda s, b=bound: s["median"] <= b)
            else:
                self.results.add(f"7 herd: handover latency ({waiters} waiters, LEASE=10)", tool,
                                 lat, "ms", "≤ 2× fig. 1 median (fig. 1 missing)")
            self.results.add("7 herd: Txn+Range requests per handover (minus baseline)", tool,
                             wakes, "requests", f"≈ 1 waiter (≪ {waiters})",
                             met=lambda s: s["median"] <= 3, digits=0)
            self.results.add("7 herd: Watch event msgs sent per handover (minus baseline)", tool, sent,
                             "msgs", f"≈ 1 waiter (≪ {waiters})",
                             met=lambda s: s["median"] <= 4, digits=0)
            self.results.add("7 herd: baseline Watch msgs sent per 1 s without handover", tool,
                             base, "msgs", "— (noise level)", digits=0)
        self.results.details["fig7"] = detail

    # -- 8: size ----------------------------------------------------------------------------------

    def fig8_size(self):
        static = self.args.static_bin
        if static and os.path.exists(static):
            size = os.path.getsize(static) / 1e6
            self.results.add("8 binary size: static musl build", "ours", [size], "MB",
                             "≤ 2 MB (build-static.sh)", met=lambda s: s["max"] <= 2.0, digits=3)
        else:
            self.results.not_measured("8 binary size: static musl build", "ours", "MB", "≤ 2 MB",
                                      "no static binary (run scripts/build-static.sh first)")
        under_test = os.path.relpath(self.args.bin)
        if under_test.startswith(".."):
            under_test = self.args.bin
        if not static or os.path.realpath(static) != os.path.realpath(self.args.bin):
            self.results.add(f"8 binary size: binary under test ({under_test}), for scale", "ours",
                             [os.path.getsize(self.args.bin) / 1e6], "MB", "—", digits=3)
        etcdctl = shutil.which("etcdctl")
        self.results.add("8 binary size: /usr/bin/etcdctl, for scale", "etcdctl",
                         [os.path.getsize(etcdctl) / 1e6], "MB", "—", digits=3)

    # -- 9: etcd's cost of idle candidates --------------------------------------------------------

    def etcd_window(self, seconds):
        """etcd's own CPU (all threads, from schedstat) and its gRPC metric deltas over `seconds`.
        The /metrics scrapes stay outside the CPU window (a scrape costs etcd CPU too)."""
        pid = self.etcd.proc.pid
        before = self.etcd.metrics()
        machine0 = machine_ticks()
        tasks0, ticks0, t0 = sched_by_task(pid), cpu_ticks(pid), time.monotonic()
        time.sleep(seconds)
        tasks1, ticks1, t1 = sched_by_task(pid), cpu_ticks(pid), time.monotonic()
        machine1 = machine_ticks()
        after = self.etcd.metrics()
        busy = machine1[0] - machine0[0]
        total = busy + machine1[1] - machine0[1]
        # Threads born in the window count whole; a thread that died in it loses its share
        # (counted in `threads_gone`; /proc/PID/stat's ticks, kept as a cross-check, include it).
        cpu = sum(ns - tasks0.get(tid, 0) for tid, ns in tasks1.items())
        methods, proposals = metric_delta(before, after)
        return {"wall_s": round(t1 - t0, 3), "cpu_ms": round(cpu / NS_PER_MS, 3),
                "cpu_ms_by_ticks": (ticks1 - ticks0) * 1000 / os.sysconf("SC_CLK_TCK"),
                "threads_gone": len(set(tasks0) - set(tasks1)), "methods": methods,
                "proposals": proposals,
                "machine_busy_pct": round(100 * busy / total, 1) if total else None}

    def crowd(self, tool, waiters, window, alone_window, pace_s, settle_s):
        """Idle etcd, then 1 leader alone, then the leader and `waiters` waiters, all idle."""
        self.quiesce()
        time.sleep(settle_s)  # the revocations' commits and etcd's own after-work
        idle = self.etcd_window(window)
        d = self.dir(f"f9/{tool}")
        led = os.path.join(d, "led")
        child = f"date +%s%N >> {sh_quote(led)}; exec sleep 100000"
        timing = {"lease": 15, "renew": None, "retry": None, "tag": "f9"}
        lock = f"f9-{tool}"
        procs = []
        try:
            procs.append(self.tools.queue(tool, lock, child, 0, **timing))
            wait_until(lambda: line_count(led) >= 1, 20, f"{tool}: crowd leader's child")
            time.sleep(1.0)
            alone = self.etcd_window(alone_window)
            # Joins are paced over `pace_s` (one waiter keepalive interval in the full run), so
            # that the waiters' keepalives spread out as independent processes' would.
            started = time.monotonic()
            for i in range(1, waiters + 1):
                procs.append(self.tools.spawn(tool, lock, child, **timing))
                left = started + i * pace_s / waiters - time.monotonic()
                if left > 0:
                    time.sleep(left)

            def everyone_queued():
                for proc in procs:
                    if proc.poll() is not None:
                        raise HarnessError(f"{tool} exited with {proc.returncode} in the crowd:\n"
                                           f"{tail(proc.log_path)}")
                if tool != "etcdctl":
                    for proc in procs[1:]:
                        with open(proc.log_path, errors="replace") as f:
                            if " queued " not in f.read():
                                return False
                return self.etcd.count(f"{lock}/") == waiters + 1

            wait_until(everyone_queued, 60, f"{tool}: {waiters} waiters to queue", interval=0.2)
            join_s = time.monotonic() - started
            time.sleep(settle_s)
            busy = self.etcd_window(window)
            for proc in procs:
                if proc.poll() is not None:
                    raise HarnessError(f"{tool} exited during the window:\n{tail(proc.log_path)}")
            if line_count(led) != 1:
                raise HarnessError(f"{tool}: the crowd's leadership changed during the measurement")
        finally:
            self.tools.stop_all(procs, timeout=30)
        self.quiesce()  # etcdctl leaves its leases behind: they must not expire in a later window
        return {"idle": idle, "alone": alone, "busy": busy, "join_s": round(join_s, 2)}

    def fig9_crowd(self):
        waiters = 5 if self.quick else 50
        window = 3 if self.quick else 60
        alone_window = 2 if self.quick else 10
        pace_s = 0.5 if self.quick else 5.0
        settle_s = 0.5 if self.quick else 5.0
        instances = waiters + 1
        label = f"1 leader + {waiters} waiters, LEASE=15, {window}s"
        detail = {"waiters": waiters, "window_s": window, "leader_alone_window_s": alone_window,
                  "lease": 15, "renew": "default (10s)", "retry": "default (2s)", "etcdctl_ttl": 15}
        figures = {}
        for tool in TOOLS:
            runs = self.crowd(tool, waiters, window, alone_window, pace_s, settle_s)
            idle, alone, busy = runs["idle"], runs["alone"], runs["busy"]
            minutes = busy["wall_s"] / 60
            idle_rate = idle["cpu_ms"] / idle["wall_s"]  # ms of CPU per second of wall time
            over_idle = busy["cpu_ms"] - idle_rate * busy["wall_s"]
            leader_over_idle = alone["cpu_ms"] - idle_rate * alone["wall_s"]

            def rate(run, method, field):
                return run["methods"].get(method, {}).get(field, 0) / (run["wall_s"] / 60)

            def per_waiter(method, field):
                """Per waiter per minute: the crowd's rate minus the leader's (its window alone)."""
                return (rate(busy, method, field) - rate(alone, method, field)) / waiters

            unary_alone = unary_requests(alone["methods"]) / (alone["wall_s"] / 60)
            unary_busy = unary_requests(busy["methods"]) / minutes
            figures[tool] = {
                "cpu_ms_per_instance_min": over_idle / instances / minutes,
                "idle_cpu_ms_min": idle_rate * 60,
                "leader_cpu_ms_min": leader_over_idle / (alone["wall_s"] / 60),
                "keepalive_msgs": per_waiter("LeaseKeepAlive", "received"),
                "keepalive_streams": per_waiter("LeaseKeepAlive", "started"),
                "watch_streams": per_waiter("Watch", "started"),
                "leader_unary_min": unary_alone,
                "waiter_unary_min": (unary_busy - unary_alone) / waiters,
                "proposals": busy["proposals"],
            }
            detail[tool] = dict(runs, figures={k: round(v, 3) for k, v in figures[tool].items()})
            for run in ("idle", "alone", "busy"):
                if runs[run]["threads_gone"]:
                    self.results.notes.append(
                        f"figure 9: {tool}: {runs[run]['threads_gone']} etcd threads ended during "
                        f"the {run} window; their CPU in it is missing from the schedstat sum")
        ours, theirs = figures["ours"], figures["etcdctl"]
        cpu = "9 etcd CPU per idle candidate over etcd's idle CPU"
        ratio = (ours["cpu_ms_per_instance_min"] / theirs["cpu_ms_per_instance_min"]
                 if theirs["cpu_ms_per_instance_min"] > 0 else math.inf)
        limit = 2.5 * theirs["cpu_ms_per_instance_min"]
        self.results.add(f"{cpu} ({label})", "ours", [ours["cpu_ms_per_instance_min"]],
                         "ms/instance/min", f"≤ 2.5× etcdctl ({limit:.2f})",
                         met=ours["cpu_ms_per_instance_min"] <= limit, digits=2)
        self.results.add(f"{cpu} ({label})", "etcdctl", [theirs["cpu_ms_per_instance_min"]],
                         "ms/instance/min", "(reference)", digits=2)
        self.results.add(f"{cpu}: ratio ours/etcdctl", "ours/etcdctl", [ratio], "×", "≤ 2.5",
                         met=ratio <= 2.5, digits=2)
        for tool in TOOLS:
            self.results.add(f"9 etcd's own CPU with no candidate (before the {tool} crowd), for scale",
                             tool, [figures[tool]["idle_cpu_ms_min"]], "ms/min", "—", digits=1)
        for tool in TOOLS:
            value = figures[tool]["keepalive_msgs"]
            self.results.add(f"9 LeaseKeepAlive msgs received per waiter per minute ({label})",
                             tool, [value], "msgs/waiter/min",
                             "≤ 13" if tool == "ours" else "(reference)",
                             met=(value <= 13) if tool == "ours" else None, digits=2)
        for tool in TOOLS:
            self.results.add(f"9 LeaseKeepAlive streams started per waiter per minute ({label})",
                             tool, [figures[tool]["keepalive_streams"]], "streams/waiter/min",
                             "— (gateway: one per keepalive)", digits=2)
        for tool in TOOLS:
            self.results.add(f"9 Watch streams opened per waiter per minute ({label})", tool,
                             [figures[tool]["watch_streams"]], "streams/waiter/min", "— (reported)",
                             digits=2)
        for tool in TOOLS:
            self.results.add(f"9 unary requests per minute: the leader alone ({alone_window}s)",
                             tool, [figures[tool]["leader_unary_min"]], "requests/min",
                             "— (ours: an own-key read per 2 s keepalive, 30)", digits=1)
        for tool in TOOLS:
            # One request more or less in the leader's short window alone moves the per-waiter
            # figure by this much: the resolution of the subtraction.
            step = 60 / detail[tool]["alone"]["wall_s"] / waiters
            value = figures[tool]["waiter_unary_min"]
            self.results.add(f"9 unary requests per waiter per minute ({label})", tool, [value],
                             "requests/waiter/min", f"0 (± {step:.2f}, one leader request)",
                             met=abs(value) <= step + 1e-9, digits=2)
        self.results.details["fig9"] = detail
        spread = abs(ours["idle_cpu_ms_min"] - theirs["idle_cpu_ms_min"])
        if self.quick:
            self.results.notes.append(
                f"figure 9 under --quick is a smoke test of the harness: {window}s windows hold "
                "about one keepalive per waiter, and the CPU figures and their ratio are noise")
        self.results.notes.append(
            f"figure 9: etcd's idle CPU differed by {spread:.0f} ms/min between the two idle "
            f"windows; as noise, that is {spread / instances:.2f} ms/instance/min on each CPU figure")
        self.results.notes.append(
            f"figure 9: per tool, etcd's CPU (sum of /proc/ETCD/task/*/schedstat) over {window}s with "
            f"no candidate, then over {alone_window}s with the leader alone, then over {window}s "
            f"with the leader and {waiters} waiters queued (joins paced over {pace_s:.0f}s, "
            f"{settle_s:.0f}s settling); CPU per instance = (crowd − idle) / {instances}; per-waiter "
            "rates = (crowd − leader alone) / waiters. Ours: LEASE_DURATION=15, RENEW_DEADLINE and "
            "RETRY_PERIOD unset (10 s, 2 s); etcdctl: --ttl=15.")


def release_fifo(path):
    """Lets the child blocked reading `path` go on (fails if nobody is reading it)."""
    deadline = time.monotonic() + 5
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise HarnessError(f"no child is waiting on {path}")
            time.sleep(0.005)
    try:
        os.write(fd, b"go\n")
    finally:
        os.close(fd)


def sched_ns(pid):
    """Nanoseconds on CPU of the process's live threads (/proc/PID/task/*/schedstat)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def sched_by_task(pid):
    """Nanoseconds on CPU of each live thread of the process ({tid: ns}, from schedstat)."""
    out = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                out[int(task)] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out


def machine_ticks():
    """(busy, idle) clock ticks of all CPUs together, from /proc/stat (idle includes iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle, idle


def cpu_ticks(pid):
    """utime + stime of the whole process in clock ticks (dead threads included)."""
    fields = proc_stat_fields(pid)
    return int(fields[11]) + int(fields[12])


def read_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0])
    return out


def environment(args, etcd):
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "quick": args.quick,
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "binary": args.bin,
        "static_binary": args.static_bin if args.static_bin and os.path.exists(args.static_bin) else None,
        "etcd_endpoint": etcd.endpoint,
    }
    for key, argv in (("etcd", ["etcd", "--version"]), ("etcdctl", ["etcdctl", "version"]),
                      ("ours", [args.bin, "--version"])):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            info[key] = (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired) as error:
            info[key] = f"unknown ({error})"
    return info


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def write_outputs(args, results, env, failures, elapsed):
    os.makedirs(args.out, exist_ok=True)
    table = results.table()
    md = [
        "# etcd-await-election benchmark" + (" (--quick)" if args.quick else ""),
        "",
        f"{env['date']}, {env['nproc']} CPUs, kernel {env['kernel']}, {env.get('etcd')}, "
        f"{env.get('etcdctl')}, ours: {env.get('ours')}. Load average at start {env['load_start']}, "
        f"at end {env['load_end']}. Run time {elapsed:.0f} s.",
        "",
        "ours = etcd-await-election; etcdctl = `etcdctl lock --ttl=LEASE NAME sh -c …` (etcd's Go "
        "client). Lease 5 s, RENEW 3 s, RETRY 1 s unless a figure says otherwise. Latencies "
        "include the child's own `sh -c 'date +%s%N'` cost (figure 0).",
        "",
        table,
        "",
    ]
    fig6 = results.details.get("fig6")
    if fig6:
        md += ["## Figure 6: gRPC deltas per method during the quiet window", "",
               "| tool | method | type | streams/calls started | handled | msgs received | msgs sent |",
               "|---|---|---|---|---|---|---|"]
        for tool, d in fig6.items():
            for method, e in sorted(d["methods"].items()):
                md.append(f"| {tool} | {method} | {e['type']} | {e['started']} | {e['handled']} | "
                          f"{e['received']} | {e['sent']} |")
            md.append(f"| {tool} | (proposals committed) | | | | | {d['proposals_committed']} |")
        md.append("")
        split = [(tool, d["by_role"]) for tool, d in fig6.items() if d.get("by_role")]
        if split:
            md += ["Gateway requests per role, counted by a relay in front of etcd (etcdctl's gRPC "
                   "cannot be counted this way):", "",
                   "| tool | role | keepalive requests | watch requests | unary requests | "
                   "TCP connections opened | by path |",
                   "|---|---|---|---|---|---|---|"]
            for tool, roles in split:
                for role, r in roles.items():
                    paths = ", ".join(f"{p} {n}" for p, n in sorted(r["paths"].items()))
                    md.append(f"| {tool} | {role} | {r['keepalive']} | {r['watch']} | "
                              f"{r['unary']} | {r['connections']} | {paths} |")
            md.append("")
    fig9 = results.details.get("fig9")
    if fig9:
        md += ["## Figure 9: etcd's windows", "",
               "| tool | window | wall s | etcd CPU ms (schedstat) | (by ticks) | LeaseKeepAlive "
               "msgs / streams | Watch streams | unary | proposals | machine busy |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for tool in TOOLS:
            d = fig9.get(tool)
            if not d:
                continue
            for run in ("idle", "alone", "busy"):
                w = d[run]
                m = w["methods"]
                ka = m.get("LeaseKeepAlive", {})
                name = {"idle": "no candidate", "alone": "leader alone",
                        "busy": f"leader + {fig9['waiters']} waiters"}[run]
                md.append(f"| {tool} | {name} | {w['wall_s']:.1f} | {w['cpu_ms']:.1f} | "
                          f"{w['cpu_ms_by_ticks']:.0f} | {ka.get('received', 0)} / "
                          f"{ka.get('started', 0)} | {m.get('Watch', {}).get('started', 0)} | "
                          f"{unary_requests(m)} | {w['proposals']} | "
                          f"{w['machine_busy_pct']} % |")
        md.append("")
    if results.notes or failures:
        md += ["## Notes", ""]
        md += [f"- {note}" for note in results.notes]
        md += [f"- HARNESS FAILURE: {f}" for f in failures]
        md.append("")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(md))
    rows = [{k: v for k, v in row.items() if k != "digits"} for row in results.rows]
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump({"environment": env, "elapsed_s": round(elapsed, 1), "rows": rows,
                   "details": results.details, "notes": results.notes, "failures": failures},
                  f, indent=2, default=str)
    print()
    print(table)
    print()
    for note in results.notes:
        print(f"note: {note}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bin", required=True, help="the etcd-await-election binary to run")
    parser.add_argument("--static-bin", help="static musl build, for figure 8 (may not exist)")
    parser.add_argument("--out", required=True, help="where results.md/results.json go")
    parser.add_argument("--tmp", required=True, help="scratch directory (must exist)")
    parser.add_argument("--registry", required=True, help="file to append session ids to")
    parser.add_argument("--only", help="comma-separated figure numbers to run (debugging)")
    args = parser.parse_args()

    started = time.monotonic()
    procs = Processes(args.registry)
    os.makedirs(os.path.join(args.tmp, "logs"), exist_ok=True)

    def terminate(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    results = Results()
    etcd = Etcd(procs, args.tmp)
    failures = []
    env = {}
    try:
        log(f"starting etcd (load average {loadavg()})")
        etcd.start()
        log(f"etcd at {etcd.endpoint}")
        env = environment(args, etcd)
        env["load_start"] = loadavg()
        static = args.static_bin if args.static_bin and os.path.exists(args.static_bin) else None
        tools = Tools(procs, etcd, args.tmp, args.bin, static)
        bench = Bench(args, procs, etcd, tools, results)
        figures = [
            ("0", "0 calibration", bench.fig0_calibration),
            ("1", "1 graceful handover", bench.fig1_handover),
            ("2", "2 crash failover", bench.fig2_crash),
            ("3", "3 start-up", bench.fig3_startup),
            ("4", "4+5 memory and idle CPU", bench.fig45_idle),
            ("6", "6 etcd load", bench.fig6_load),
            ("7", "7 herd", bench.fig7_herd),
            ("8", "8 binary size", bench.fig8_size),
            ("9", "9 etcd cost of idle candidates", bench.fig9_crowd),
        ]
        only = set(args.only.split(",")) if args.only else None
        for key, name, function in figures:
            if only is None or key in only:
                bench.run_figure(name, function)
        failures = bench.failures
        if bench.revoked_leftovers:
            results.notes.append(
                f"between measurements the harness revoked {bench.revoked_leftovers} leases left "
                "behind by exited instances (etcdctl lock deletes its key but never revokes its "
                "session lease; it would expire a TTL later, inside another measurement)")
    except KeyboardInterrupt as interrupt:
        log(f"interrupted ({interrupt}); cleaning up")
        failures.append(f"interrupted ({interrupt})")
    except HarnessError as error:
        log(f"FAILED: {error}")
        failures.append(str(error))
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        procs.kill_all()
        etcd.stop()
    env["load_end"] = loadavg()
    env.setdefault("date", datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    env.setdefault("nproc", os.cpu_count())
    env.setdefault("kernel", platform.release())
    env.setdefault("load_start", "?")
    elapsed = time.monotonic() - started
    write_outputs(args, results, env, failures, elapsed)
    log(f"wrote {args.out}/results.md and results.json in {elapsed:.0f}s")
    if failures:
        for failure in failures:
            log(f"HARNESS FAILURE: {failure}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
