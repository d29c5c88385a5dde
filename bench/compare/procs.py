"""Starting a server in its own process group, timing it to its first answer, measuring the
memory of everything it forked, and stopping all of it, even on Ctrl-C.

Every server the benchmark starts is registered in ``RUNNING``; ``stop_all`` (called from a
``finally`` and from the SIGTERM handler in run.py) stops what is still up.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

RUNNING: list[Server] = []


def free_port() -> int:
    """A loopback port nobody listens on now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    """``pid`` and every process below it (gunicorn's workers, redis-server's none)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def memory(pids: Sequence[int]) -> tuple[float, float]:
    """RSS and PSS of ``pids`` together, in MiB. PSS shares pages that gunicorn's forked
    workers have in common fairly among them; RSS counts them once per process."""
    rss = pss = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


@dataclass
class Server:
    """One process (and what it forks) answering HTTP on 127.0.0.1:``port``."""

    name: str
    argv: list[str]
    port: int
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_path: str | None, timeout: float = 60) -> float:
        """Start it; with ``ready_path``, wait for a 200 there and return the seconds from
        spawn to that first answer (the cold start)."""
        out = self.log.open("ab")
        began = time.monotonic()
        self.process = subprocess.Popen(
            self.argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            cwd=self.cwd,
            start_new_session=True,  # its own process group: stopped as one
        )
        out.close()
        RUNNING.append(self)
        if ready_path is None:
            return 0.0
        deadline = began + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with urllib.request.urlopen(self.url + ready_path, timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - began
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.005)
        self.stop()
        tail = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} did not answer {ready_path}:\n{tail}")

    def pids(self) -> list[int]:
        return [] if self.process is None else children(self.process.pid)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to its process group, SIGKILL after ``timeout``."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            except ProcessLookupError:
                pass
        # Workers that outlived their master (none should) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self in RUNNING:
            RUNNING.remove(self)
        self.process = None


def stop_all() -> None:
    for server in list(reversed(RUNNING)):
        server.stop()
