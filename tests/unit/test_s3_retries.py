"""An S3 store that misbehaves for longer than the S3 SDK's own retries (5 retries for a job's
store, 2 for a client command's): answering 503 or dropping the connection. botocore's real
client, retry policy and error handling run; its requests are answered in this process (a
`before-send` handler) instead of by a server: the time a test takes is the backoff's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import EndpointConnectionError

from kbench.errors import StoreUnavailable
from kbench.s3 import S3Store

BUSY = b"<Error><Code>ServiceUnavailable</Code><Message>Please reduce your rate</Message></Error>"


class Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_) -> Iterator[bytes]:
        yield self.data

    def read(self, *_, **__) -> bytes:
        return self.data


class Flaky:
    """Answers the first `failures` requests with `fault` (503, or a dropped connection),
    then every one with the object's bytes."""

    def __init__(self, failures: int, fault: str) -> None:
        self.failures, self.fault, self.requests = failures, fault, 0

    def __call__(self, request, **_) -> AWSResponse:
        self.requests += 1
        if self.requests <= self.failures and self.fault == "503":
            return AWSResponse(request.url, 503, {"Content-Type": "application/xml"}, Body(BUSY))
        if self.requests <= self.failures:
            raise EndpointConnectionError(endpoint_url=request.url)
        return AWSResponse(request.url, 200, {"Content-Length": "7"}, Body(b"payload"))


@pytest.fixture(autouse=True)
def credentials(monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "k")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # never reached


def flaky_store(failures: int, fault: str, retry_s: float) -> tuple[S3Store, Flaky]:
    store = S3Store("s3://bucket/runs", retry_s=retry_s)
    answer = Flaky(failures, fault)
    store.client.meta.events.register("before-send.s3", answer)
    return store, answer


@pytest.mark.parametrize("fault", ["503", "connection"])
def test_a_jobs_store_outlasts_faults_longer_than_the_sdks_retries(fault, capsys):
    store, answer = flaky_store(12, fault, retry_s=600)
    assert store.read("k") == b"payload"
    assert answer.requests == 13  # the SDK's 1 + 5 attempts twice failed: kbench went on
    log = capsys.readouterr().err.splitlines()
    assert len(log) == 2 and "retrying for up to 600 s" in log[0] and "answers again" in log[1]


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("503", "S3 is unavailable on s3://bucket/runs: ServiceUnavailable"),
        ("connection", "cannot reach the S3 endpoint"),
    ],
)
def test_a_client_commands_store_fails_at_once_in_one_line(fault, says):
    store, answer = flaky_store(12, fault, retry_s=0)
    with pytest.raises(StoreUnavailable, match=says) as refused:
        store.read("k")
    assert answer.requests == 3  # the SDK's 1 + 2 attempts, then one line
    assert "\n" not in str(refused.value)
