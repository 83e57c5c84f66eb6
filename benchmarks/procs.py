"""Starting, watching and stopping the processes a benchmark runs, always by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class ProcessError(RuntimeError):
    """A process did not start or did not answer in time; the message carries its log tail."""


@dataclass
class Proc:
    """A process this benchmark started (the leader of its own session)."""

    name: str
    popen: subprocess.Popen
    log: str

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None and state(self.pid) not in (None, "Z")

    def log_tail(self, chars: int = 3000) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 15.0) -> None:
        stop(self, timeout)


def spawn(
    name: str,
    cmd: Sequence[str],
    *,
    log_dir: str,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> Proc:
    """Start ``cmd`` in a new session with its output in ``log_dir/name.log``."""
    os.makedirs(log_dir, exist_ok=True)
    log = os.path.join(log_dir, f"{name}.log")
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return Proc(name, popen, log)


def stop(proc: Proc, timeout: float = 15.0) -> None:
    """SIGTERM the process; SIGKILL its process group if it is still there after ``timeout``."""
    if proc.popen.poll() is None:
        try:
            proc.popen.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while proc.popen.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    # Workers that outlived their master (or a master that ignored SIGTERM).
    leftovers = []
    if proc.popen.poll() is None:
        leftovers = [p for p in tree(proc.pid) if state(p) not in (None, "Z")]
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.popen.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def state(pid: int) -> str | None:
    """The process state letter (R, S, D, Z, ...) or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


def tree(pid: int) -> list[int]:
    """``pid`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if len(fields) > 1:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo and len(found) < 10_000:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, ()))
    return found


def wait_http(url: str, proc: Proc, *, timeout: float = 60.0, ok=(200, 401, 403)) -> None:
    """Poll ``url`` until it answers with a status in ``ok``; ProcessError if ``proc`` dies first
    or does not answer within ``timeout`` (it is stopped then: a server that never became
    ready is of no use to its caller)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status in ok:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code in ok:
                return
        except OSError:
            pass
        if not proc.alive():
            stop(proc)  # its process group: workers it left behind
            raise ProcessError(f"{proc.name} exited with {proc.popen.poll()}:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            stop(proc)
            raise ProcessError(f"{proc.name} did not answer {url} within {timeout:.0f} s:\n{proc.log_tail()}")
        time.sleep(0.1)


def run(
    cmd: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run a command to completion (bounded by ``timeout``), capturing its output."""
    result = subprocess.run(
        list(cmd),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    if check and result.returncode != 0:
        raise ProcessError(
            f"{' '.join(cmd[:4])} ... exited {result.returncode}:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
        )
    return result
