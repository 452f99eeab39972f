"""What scripts/bench.py and scripts/chaos.py share: processes started in sessions of their own
and killed session-wide, and the two byte helpers of etcd's JSON gateway. Python 3 stdlib only."""

import base64
import os
import signal
import subprocess
import threading
import time


def b64(text):
    """A gateway `bytes` field: standard base64 of the UTF-8 text (or of raw bytes)."""
    if isinstance(text, str):
        text = text.encode()
    return base64.b64encode(text).decode()


def prefix_end(prefix):
    """The range end that covers every key starting with `prefix` (raw bytes)."""
    data = bytearray(prefix.encode())
    for i in range(len(data) - 1, -1, -1):
        if data[i] < 0xFF:
            data[i] += 1
            return bytes(data[: i + 1])
    return b"\0"


def proc_stat_fields(pid):
    """Fields of /proc/PID/stat after the command name (index 0 = state, 3 = session id)."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    return data[data.rindex(")") + 2 :].split()


class Processes:
    """Starts every process in a session of its own, records its id in `registry` (for the shell
    wrapper's backstop), and kills whole sessions at the end: that also reaches the commands our
    wrapper puts in process groups of their own. Sessions that our processes' descendants create
    with `setsid` are not ours until [`adopt`]ed."""

    def __init__(self, registry):
        self.registry = registry
        self.sessions = set()
        self.lock = threading.Lock()

    def spawn(self, argv, env=None, log_path=None, cwd=None, stderr=None):
        """`stderr`, when given, is the file descriptor the process gets as its stderr (stdout
        still goes to `log_path`); the caller keeps and closes it."""
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out if stderr is None else stderr,
                start_new_session=True,
                close_fds=True,
            )
        finally:
            if log_path:
                out.close()
        with self.lock:
            self.sessions.add(proc.pid)
        with open(self.registry, "a") as f:
            f.write(f"{proc.pid}\n")
        return proc

    def adopt(self, sid):
        """Kills session `sid` too at the end (a descendant's `setsid` made it), and lists it for
        the shell backstop."""
        with self.lock:
            if sid in self.sessions:
                return
            self.sessions.add(sid)
        with open(self.registry, "a") as f:
            f.write(f"{sid}\n")

    def forget(self, sid):
        """Session `sid` is known to be empty (its only process is gone): its id may be reused."""
        with self.lock:
            self.sessions.discard(sid)

    @staticmethod
    def members(sid):
        """PIDs of every live (not zombie) process in session `sid`."""
        return Processes.members_of({sid})

    @staticmethod
    def members_of(sids):
        """PIDs of every live (not zombie) process in any of the sessions `sids` (one /proc scan)."""
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                fields = proc_stat_fields(entry)
            except (OSError, ValueError, IndexError):
                continue
            if int(fields[3]) in sids and fields[0] != "Z":
                found.append(int(entry))
        return found

    def kill_session(self, sid, sig=signal.SIGKILL):
        pids = self.members(sid)
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        return pids

    @staticmethod
    def reap(proc, timeout):
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def kill_all(self):
        """SIGKILLs every session until none has a live member (three rounds), reaps the session
        leaders, and empties the registry so the shell backstop never reuses the ids."""
        with self.lock:
            sessions = sorted(self.sessions)
        for _ in range(3):
            pids = self.members_of(set(sessions))
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for sid in sessions:
            try:
                os.waitpid(sid, os.WNOHANG)
            except ChildProcessError:
                pass
        open(self.registry, "w").close()
