"""A pod's output, kept in the store as it runs: a gang restart deletes the failed pods, a TTL
or a colleague the finished ones, and with them the only copy of what they printed.

Everything the pod prints (torchrun, its workers, their DataLoader workers: they inherit the
descriptors) goes through a pipe that a thread copies to the pod's own output and keeps:
the first HEAD_BYTES and the last TAIL_BYTES, so a long run's log stays bounded. Another thread
writes what is kept to the store once the pod first prints, then at most every UPLOAD_S seconds
while it changes, and once more at the end; a store that is away costs the log its latest
lines, never the training a step. A pod killed at once (SIGKILL) loses what it printed since
its last write."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator

from kbench.command import POD_NAME_ENV, trainer_target
from kbench.records import log_key
from kbench.storage import Store, open_store

HEAD_BYTES, TAIL_BYTES = 64 * 1024, 1024 * 1024
UPLOAD_S = 10.0


class Kept:
    """The first HEAD_BYTES and the last TAIL_BYTES of a stream, and how much fell between."""

    def __init__(self) -> None:
        self.head, self.tail, self.dropped = bytearray(), bytearray(), 0
        self.lock = threading.Lock()
        self.version = 0

    def add(self, data: bytes) -> None:
        with self.lock:
            room = HEAD_BYTES - len(self.head)
            self.head += data[:room]
            self.tail += data[room:] if room > 0 else data
            if len(self.tail) > TAIL_BYTES:
                self.dropped += len(self.tail) - TAIL_BYTES
                del self.tail[: len(self.tail) - TAIL_BYTES]
            self.version += 1

    def text(self) -> bytes:
        with self.lock:
            gap = f"\n[... {self.dropped} bytes left out ...]\n".encode() if self.dropped else b""
            return bytes(self.head) + gap + bytes(self.tail)


@contextlib.contextmanager
def kept_in_store(store: Store, key: str) -> Iterator[Kept]:
    """Tee this process's stdout and stderr (and its children's) into the store at `key`."""
    kept, done = Kept(), threading.Event()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 1)
    os.dup2(write_end, 2)
    os.close(write_end)

    def copy() -> None:
        while chunk := os.read(read_end, 65536):
            os.write(saved[0], chunk)
            kept.add(chunk)

    def upload() -> None:
        sent, last, warned = 0, 0.0, False  # the first output at once, then every UPLOAD_S
        while True:
            finished = done.wait(1.0)
            due = finished or not sent or time.monotonic() - last >= UPLOAD_S
            if kept.version != sent and due:
                sent, last = kept.version, time.monotonic()
                try:
                    store.write(key, kept.text())
                except Exception as e:  # the log is a convenience: training goes on
                    if not warned:  # once: the next writes try again, quietly
                        why = " ".join(str(e).split())
                        os.write(saved[1], f"kbench.jobs.launch: log not kept: {why}\n".encode())
                        warned = True
            if finished:
                return

    copier = threading.Thread(target=copy, daemon=True)
    uploader = threading.Thread(target=upload, daemon=True)
    copier.start()
    uploader.start()
    try:
        yield kept
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)  # the pipe's last writers are gone: the copier reads to its end
        os.dup2(saved[1], 2)
        copier.join(10)
        done.set()
        uploader.join(60)


def pod_output(trainer_args: list[str]) -> contextlib.AbstractContextManager:
    """In a pod (an Indexed Job's JOB_COMPLETION_INDEX is set), its output kept in the store
    for its pair and node; elsewhere nothing (the local backend keeps its own log files)."""
    node = os.environ.get("JOB_COMPLETION_INDEX")
    if node is None:
        return contextlib.nullcontext()
    store, run_id, pair = trainer_target(trainer_args)
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    pod = os.environ.get(POD_NAME_ENV) or socket.gethostname()
    return kept_in_store(open_store(store), log_key(run_id, pair, node, started, pod))
