"""Where runs keep their records: a local directory or an S3-compatible bucket (kbench.s3),
chosen by URI.

Keys are plain `/`-separated strings (not `Path`, which mangles `s3://`). Every write replaces a
whole object atomically, so a reader never sees half a record: S3 PUTs are atomic by nature, the
local store writes a temporary file and renames it.

S3 endpoint, credentials and region come from the standard AWS sources (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, `AWS_REGION`, IRSA, ...), as every
AWS tool reads them; kbench adds no variables of its own for them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

from kbench.errors import ConfigError, StoreError

STORE_ENV = "KBENCH_STORE"
DEFAULT_STORE = "./kbench-runs"
# How long a training job keeps retrying a store that does not answer before it fails; the
# client's commands fail at once instead.
RETRY_ENV = "KBENCH_STORE_RETRY_S"
JOB_RETRY_S = 600.0
# How long one request to the store or the Kubernetes API may wait for an answer.
TIMEOUT_ENV = "KBENCH_TIMEOUT_S"
TIMEOUT_S = 10.0


class Store(Protocol):
    uri: str

    def read(self, key: str) -> bytes:
        """The object's bytes; raises KeyError when there is none."""

    def write(self, key: str, data: bytes) -> None:
        """Create or replace the whole object atomically."""

    def create(self, key: str, data: bytes) -> bool:
        """Write the object only if there is none, atomically: of concurrent creates of one
        key exactly one returns True, the others False."""

    def list(self, prefix: str) -> list[str]:
        """Every key under `prefix` (recursively), sorted."""

    def delete(self, key: str) -> None:
        """Remove the object; no error when there is none."""

    def put_file(self, key: str, path: str) -> None:
        """Upload a (large) local file as one object, atomically."""

    def get_file(self, key: str, path: str) -> None:
        """Download an object to a local file; raises KeyError when there is none."""

    def discard_partial(self, prefix: str) -> None:
        """Remove what interrupted writes under `prefix` left behind (hidden temporary files,
        unfinished multipart uploads). Only for a prefix whose writer is the caller."""


def open_store(uri: str | None = None, retry_s: float = 0.0) -> Store:
    """`s3://bucket/prefix` or a local directory; default `$KBENCH_STORE`, else ./kbench-runs.
    `retry_s`: how long an S3 store retries while the endpoint is unavailable (0: fail at
    once, as the client's commands do)."""
    uri = uri or os.environ.get(STORE_ENV) or DEFAULT_STORE
    if uri.startswith("s3://"):
        from kbench.s3 import S3Store  # boto3 is imported only for an S3 store

        return S3Store(uri, retry_s=retry_s)
    if "://" in uri:
        raise ConfigError(f"unsupported store {uri!r}: use s3://bucket/prefix or a local directory")
    return LocalStore(uri)


def read_json(store: Store, key: str, default: Any = KeyError) -> Any:
    """The decoded object, or `default` when there is none (KeyError if no default given)."""
    try:
        return json.loads(store.read(key))
    except KeyError:
        if default is KeyError:
            raise
        return default


def write_json(store: Store, key: str, value: Any) -> None:
    store.write(key, _json(value))


def create_json(store: Store, key: str, value: Any) -> bool:
    """`store.create` of a JSON object: False when the key already exists."""
    return store.create(key, _json(value))


def _json(value: Any) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True, allow_nan=True).encode()


class LocalStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser().absolute()
        self.uri = str(self.root)
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"store {self.uri} is a file: give a directory (or s3://...)")

    def _path(self, key: str) -> Path:
        path = self.root / key
        # Keys come from records too, and the store is shared: none may lead out of it.
        if ".." in Path(key).parts or not path.is_relative_to(self.root):
            raise StoreError(f"key {key!r} leads outside the store {self.uri}")
        return path

    def read(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None

    def write(self, key: str, data: bytes) -> None:
        path, tmp = self._staged(key, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def create(self, key: str, data: bytes) -> bool:
        path, tmp = self._staged(key, data)
        try:
            os.link(tmp, path)  # fails if the object exists: an exclusive, complete create
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

    def _staged(self, key: str, data: bytes) -> tuple[Path, Path]:
        """The object's path and a complete hidden copy of `data` beside it, to be moved or
        linked into place: a reader never sees half an object."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path, Path(tmp)

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if not Path(k).name.startswith("."))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def put_file(self, key: str, path: str) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def get_file(self, key: str, path: str) -> None:
        try:
            shutil.copyfile(self._path(key), path)
        except FileNotFoundError:
            raise KeyError(key) from None

    def discard_partial(self, prefix: str) -> None:
        folder = self._path(prefix)
        for tmp in folder.glob(".*.tmp") if folder.is_dir() else []:
            tmp.unlink(missing_ok=True)


def patient(store: Store) -> Store:
    """The same store, riding out outages for a job's retry window: for a process that, like a
    job, must outlast a blip (the local backend's bookkeeping while its pairs train)."""
    return open_store(store.uri, retry_s=job_retry_s()) if store.uri.startswith("s3://") else store


def timeout_s() -> float:
    """Seconds a request may wait for an answer: $KBENCH_TIMEOUT_S, default 10."""
    return env_seconds(TIMEOUT_ENV, TIMEOUT_S, minimum_open=True)


def connect_timeout_s() -> float:
    """Seconds to wait for a connection: the request timeout, at most 10."""
    return min(10.0, timeout_s())


def env_seconds(name: str, default: float, minimum_open: bool = False) -> float:
    """A number of seconds from the environment, checked: one line if it is not one."""
    value = os.environ.get(name, "")
    try:
        seconds = float(value) if value else default
    except ValueError:
        seconds = -1.0
    if not (seconds > 0 if minimum_open else seconds >= 0) or seconds == float("inf"):
        more = "more than 0" if minimum_open else "0 or more"
        raise ConfigError(f"{name}={value!r}: expected a number of seconds, {more}")
    return seconds


def job_retry_s() -> float:
    """A training job's retry window: $KBENCH_STORE_RETRY_S seconds, default 10 minutes."""
    return env_seconds(RETRY_ENV, JOB_RETRY_S)
