"""The S3 store: any S3-compatible bucket (AWS S3, MinIO, Ceph, R2, SeaweedFS) through boto3,
every request with a timeout, every botocore failure turned into one line that says what to fix,
and, for a training job, an outage ridden out with jittered backoff (`retry_s`).

S3 endpoint, credentials and region come from the standard AWS sources (`AWS_ENDPOINT_URL`,
`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, `AWS_REGION`, IRSA, ...), as every
AWS tool reads them; kbench adds no variables of its own for them.
"""

from __future__ import annotations

import contextlib
import random
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from kbench.errors import ConfigError, StoreError, StoreUnavailable
from kbench.storage import connect_timeout_s, timeout_s

# 5xx and throttling: worth another try.
TRANSIENT_CODES = {
    "500", "502", "503", "504", "InternalError", "ServiceUnavailable", "SlowDown",
    "Throttling", "ThrottlingException", "RequestTimeout",
}  # fmt: skip


def _log(message: str) -> None:
    print(f"kbench: {message}", file=sys.stderr, flush=True)


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
