"""Real processes under test: a whole process tree signalled (torchrun and its workers), and
the network as a pod without internet sees it."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

# The network as a pod without internet sees it: any download goes to a dead proxy and fails
# at once; only the store (loopback) answers.
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}
# Loaded first by every Python process started with it on PYTHONPATH: a socket may connect to
# the store's port on loopback and to nothing else, and no other host name resolves.
SOCKET_GUARD = """
import os, socket
_port, _connect, _resolve = int(os.environ["ONLY_PORT"]), socket.socket.connect, socket.getaddrinfo
def _allowed(address):
    return address[0] in ("127.0.0.1", "localhost", "::1") and int(address[1]) == _port
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _allowed(address):
        raise ConnectionRefusedError(f"network off: {address}")
    return _connect(self, address)
def getaddrinfo(host, *args, **kwargs):
    if host not in ("127.0.0.1", "localhost", "::1", None):
        raise socket.gaierror(f"network off: {host}")
    return _resolve(host, *args, **kwargs)
socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
"""


def network_off(tmp_path: Path, store_port: int) -> dict[str, str]:
    """The environment of a process whose sockets reach the store only."""
    guard = tmp_path / "guard"
    guard.mkdir(exist_ok=True)
    (guard / "sitecustomize.py").write_text(SOCKET_GUARD)
    path = os.pathsep.join(filter(None, [str(guard), os.environ.get("PYTHONPATH")]))
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return {**env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": path, "ONLY_PORT": str(store_port)}


def kill_tree(pid: int, sig: int) -> None:
    """Signal a process and all its descendants (torchrun's workers run in their own group)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    tree, queue = [], [pid]
    while queue:
        tree.append(queue.pop())
        queue += children.get(tree[-1], [])
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, sig)
    if sig == signal.SIGKILL:  # gone once this returns, as after a crash (a process busy in
        _wait_gone(tree)  # the kernel, writing a checkpoint say, dies a moment later)


def _wait_gone(pids: list[int], timeout: float = 30.0) -> None:
    """Until every process is dead: exited, or a zombie nobody reaps."""
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                        break
            except (OSError, IndexError):
                break
            time.sleep(0.01)
