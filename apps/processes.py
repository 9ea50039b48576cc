"""Supervising role processes: start them, watch them, stop them all together."""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when the supervisor dies, even by SIGKILL.

    Without this, a killed ``seal demo`` would leave its roles running (and holding their ports).
    Elsewhere it does nothing: there, only a clean exit of the supervisor stops the roles.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class ProcessFailed(Exception):
    """A supervised process exited before it should have."""


def free_tcp_ports(count: int) -> list[int]:
    """Ports that were free on loopback a moment ago (the OS picks them)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ProcessGroup:
    """Child processes that live and die together; leaving the block stops every one."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    def spawn(self, name: str, argv: list[str], log: Path | None = None) -> None:
        """Start ``argv``; its output goes to ``log`` (or this terminal when None)."""
        out = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            out = log.open("ab")
            self.logs[name] = log
        self.procs[name] = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT if out else None, preexec_fn=_die_with_parent
        )

    def wait_for(self, name: str, poll_s: float = 0.5) -> int:
        """Wait for ``name`` to exit; raise ProcessFailed if another member exits first."""
        while (code := self.poll(name)) is None:
            time.sleep(poll_s)
        return code

    def poll(self, name: str) -> int | None:
        """``name``'s exit code, or None while it runs; raise ProcessFailed if another member has exited."""
        code = self.procs[name].poll()
        if code is not None:
            return code
        for other, proc in self.procs.items():
            if other != name and proc.poll() is not None:
                raise ProcessFailed(f"the {other} exited with code {proc.returncode}{self._tail(other)}")
        return None

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM everyone still running, then SIGKILL after ``grace_s``."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _tail(self, name: str, lines: int = 8) -> str:
        log = self.logs.get(name)
        if log is None or not log.exists():
            return ""
        tail = log.read_text(errors="replace").splitlines()[-lines:]
        return f"; last lines of {log}:\n" + "\n".join(tail)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
