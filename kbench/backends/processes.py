"""The local backend's processes: which process a pair's local.json names (a pid alone may since
name another process, so its host, start time and command line are kept and checked before
anything is signalled), stopping one, and reading its log."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil

from kbench.errors import JOB_ERROR_PREFIX
from kbench.records import LocalProcess, ProcessIdentity, utc_now

POLL_S = 1.0  # how often a pair's process and log are looked at


def identify(pid: int) -> ProcessIdentity:
    """What identifies a process beyond its id, which the system reuses: host, start time
    (since boot) and command line."""
    process = psutil.Process(pid)
    return {
        "pid": pid,
        "host": socket.gethostname(),
        "since_boot": since_boot(pid),
        "command": process.cmdline(),
    }


def since_boot(pid: int) -> float:
    """When the process started, in seconds after the machine booted: fixed for its life.
    Not psutil's create_time alone: that adds the boot time, which the kernel derives from
    the wall clock, so a clock step (NTP, a resumed VM) moves it and a running trainer would
    be taken for a stranger. psutil reads the boot time as it makes the Process; reading it
    before and after makes sure both sides of the subtraction saw the same clock."""
    while True:
        boot = psutil.boot_time()
        created = psutil.Process(pid).create_time()
        if psutil.boot_time() == boot:
            return created - boot


def record(pid: int, state: str) -> LocalProcess:
    """A local.json for process `pid`, started now."""
    return typing.cast(LocalProcess, {"state": state, "started": utc_now(), **identify(pid)})


def alive(process: ProcessIdentity) -> bool:
    """Whether the process may still run (another host's: assume so)."""
    if process["host"] != socket.gethostname():
        return True
    return psutil.pid_exists(process["pid"])


def ours(process: ProcessIdentity) -> bool:
    """Whether the process is alive and the one kbench started: same start time and command
    line (a pid alone may since name another process)."""
    if not alive(process):
        return False
    if process["host"] != socket.gethostname():
        return True  # cannot be checked from here; nor signalled
    try:
        same_start = abs(since_boot(process["pid"]) - process["since_boot"]) < 0.01
        return same_start and psutil.Process(process["pid"]).cmdline() == process["command"]
    except (psutil.Error, OSError):
        return False


def terminate(pid: int) -> None:
    """SIGTERM the whole process group: torchrun and its workers (it leads its group)."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGTERM)


def follow(path: Path, state: Callable[[], str | None]) -> Iterator[str]:
    """The log as it grows, until its pair stops running."""
    with open(path, encoding="utf-8", errors="replace") as f:
        while True:
            chunk = f.read()
            if chunk:
                yield chunk
            elif state() not in ("running", "cancelling"):
                yield f.read()
                return
            else:
                time.sleep(POLL_S)


def failure_reason(log_path: Path) -> str | None:
    """The job's own one-line error (a bad config), if it printed one."""
    for line in reversed(tail(log_path, 200)):
        if line.startswith(JOB_ERROR_PREFIX):
            return line.removeprefix(JOB_ERROR_PREFIX).strip()
    return None


def tail(path: Path, lines: int) -> list[str]:
    return path.read_text("utf-8", errors="replace").splitlines()[-lines:]
