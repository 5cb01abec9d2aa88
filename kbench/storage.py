"""Where runs keep their records: a local directory or an S3-compatible bucket, chosen by URI.

Keys are plain `/`-separated strings (not `Path`, which mangles `s3://`). Every write replaces a
whole object atomically, so a reader never sees half a record: S3 PUTs are atomic by nature, the
local store writes a temporary file and renames it.

S3 endpoint, credentials and region come from the standard AWS sources (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, `AWS_REGION`, IRSA, ...), as every
AWS tool reads them; kbench adds no variables of its own for them.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from kbench.errors import ConfigError, StoreError, StoreUnavailable

STORE_ENV = "KBENCH_STORE"
DEFAULT_STORE = "./kbench-runs"
# How long a training job keeps retrying a store that does not answer before it fails; the
# client's commands fail at once instead.
RETRY_ENV = "KBENCH_STORE_RETRY_S"
JOB_RETRY_S = 600.0
# How long one request to the store or the Kubernetes API may wait for an answer.
TIMEOUT_ENV = "KBENCH_TIMEOUT_S"
TIMEOUT_S = 10.0
# 5xx and throttling: worth another try.
TRANSIENT_CODES = {
    "500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown",
    "Throttling", "ThrottlingException", "RequestTimeout",
}  # fmt: skip


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


def _log(message: str) -> None:
    print(f"kbench: {message}", file=sys.stderr, flush=True)


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
    return S3Store(store.uri, retry_s=job_retry_s()) if isinstance(store, S3Store) else store


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


class S3Store:
    def __init__(self, uri: str, retry_s: float = 0.0) -> None:
        import boto3  # the local store must not pay for importing boto3
        from botocore.config import Config
        from botocore.exceptions import PartialCredentialsError

        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket:
            raise ConfigError(f"store {uri!r} names no bucket: use s3://bucket/prefix")
        self.uri = uri.rstrip("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.retry_s = retry_s
        # Timeouts on every request: an endpoint that accepts connections but never answers
        # fails in seconds. botocore's standard mode backs off on throttling and transient
        # errors; a job (retry_s > 0) then keeps trying for its window, a client command not.
        config = Config(
            connect_timeout=connect_timeout_s(),
            read_timeout=timeout_s() if not retry_s else max(60.0, timeout_s()),
            retries={"mode": "standard", "max_attempts": 5 if retry_s else 2},
            max_pool_connections=32,
        )
        try:
            # A session of its own: boto3's default session keeps the credentials it saw first.
            self.client = boto3.session.Session().client("s3", config=config)
        except PartialCredentialsError:
            raise ConfigError(
                f"incomplete AWS credentials for {uri}: set both AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
            ) from None
        except ValueError as e:  # a malformed AWS_ENDPOINT_URL or region
            raise ConfigError(f"cannot configure S3 for {uri}: {e}") from None

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def read(self, key: str) -> bytes:
        def get() -> bytes:
            try:
                return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
            except self.client.exceptions.NoSuchKey:
                raise KeyError(key) from None

        return self._call(get)

    def write(self, key: str, data: bytes) -> None:
        self._call(
            lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        )

    def create(self, key: str, data: bytes) -> bool:
        """A conditional PUT (`If-None-Match: *`): AWS S3, MinIO and SeaweedFS refuse it when
        the object exists. A server that ignores the header lets every create succeed."""
        from botocore.exceptions import ClientError

        def put() -> bool:
            try:
                self.client.put_object(
                    Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*"
                )
                return True
            except ClientError as e:
                # 412: the object exists; 409: another conditional write of it is in flight.
                code = e.response.get("Error", {}).get("Code", "")
                if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "409"):
                    return False
                raise

        return self._call(put)

    def list(self, prefix: str) -> list[str]:
        full = self._key(prefix).rstrip("/") + "/" if prefix or self.prefix else ""
        strip = len(self.prefix) + 1 if self.prefix else 0

        def pages() -> list[str]:
            keys = []
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                keys += [obj["Key"][strip:] for obj in page.get("Contents", [])]
            return sorted(keys)

        return self._call(pages)

    def delete(self, key: str) -> None:
        self._call(lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(key)))

    def put_file(self, key: str, path: str) -> None:
        # boto3's managed transfer: multipart and concurrent for large files, retried per part.
        self._call(lambda: self.client.upload_file(path, self.bucket, self._key(key)))

    def get_file(self, key: str, path: str) -> None:
        from botocore.exceptions import ClientError

        def download() -> None:
            try:
                self.client.download_file(self.bucket, self._key(key), path)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                    raise KeyError(key) from None
                raise

        self._call(download)

    def discard_partial(self, prefix: str) -> None:
        def abort() -> None:
            folder = self._key(prefix).rstrip("/") + "/"
            paginator = self.client.get_paginator("list_multipart_uploads")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=folder):
                for upload in page.get("Uploads", []):
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )

        self._call(abort)

    def _call(self, request: Callable[[], Any]) -> Any:
        """One request, its failures as one line; while the endpoint is unavailable, tried
        again with backoff for up to `retry_s` seconds (one line when it goes, one when it is
        back)."""
        down_since = None
        delay = 1.0
        while True:
            try:
                with self._errors():
                    result = request()
            except StoreUnavailable as e:
                now = time.monotonic()
                if down_since is None:
                    down_since = now
                    if self.retry_s:
                        _log(f"{e}; retrying for up to {self.retry_s:.0f} s")
                if now - down_since >= self.retry_s:
                    if not self.retry_s:
                        raise
                    raise StoreUnavailable(
                        f"{e}; gave up after {now - down_since:.0f} s of retries"
                    ) from None
                time.sleep(min(delay * random.uniform(0.5, 1.0), 30.0))  # jittered backoff
                delay *= 2
                continue
            if down_since is not None:
                _log(f"store {self.uri} answers again after {time.monotonic() - down_since:.0f} s")
            return result

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn botocore's failures into one line that says what to fix."""
        from boto3.exceptions import S3UploadFailedError as S3TransferFailed
        from botocore import exceptions as bx

        try:
            yield
        except bx.NoCredentialsError:
            raise ConfigError(
                f"no AWS credentials for {self.uri}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
            ) from None
        except bx.EndpointConnectionError as e:
            raise StoreUnavailable(
                f"cannot reach the S3 endpoint {e.kwargs.get('endpoint_url')}: "
                "check AWS_ENDPOINT_URL and the network"
            ) from None
        except (bx.ConnectionClosedError, bx.ReadTimeoutError, bx.ConnectTimeoutError) as e:
            raise StoreUnavailable(f"the S3 endpoint of {self.uri} did not answer: {e}") from None
        except S3TransferFailed as e:
            # boto3's managed transfers wrap a ClientError; judge it by what they wrap.
            with self._errors():
                raise (
                    e.__context__ or StoreError(f"S3 transfer failed on {self.uri}: {e}")
                ) from None
        except bx.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in TRANSIENT_CODES:
                raise StoreUnavailable(f"S3 is unavailable on {self.uri}: {code}") from None
            if code == "NoSuchBucket":
                raise StoreError(
                    f"bucket {self.bucket!r} does not exist: create it first"
                ) from None
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                raise StoreError(
                    f"S3 refused access to {self.uri} ({code}): check the credentials"
                ) from None
            raise StoreError(f"S3 error on {self.uri}: {code} {e}") from None
