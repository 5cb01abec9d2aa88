"""Endpoints that accept a connection and never answer (a hung proxy, a stopped VM behind a
live load balancer): every command fails within seconds with one line, never hangs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest


@pytest.fixture
def silent():
    """A TCP server that accepts every connection, reads, and never writes a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for connection in held:
        connection.close()


def kbench_process(args: list[str], env: dict[str, str], cwd) -> subprocess.CompletedProcess:
    # A hang fails the test here (TimeoutExpired) instead of stalling the suite.
    return subprocess.run(
        [sys.executable, "-m", "kbench.cli.main", *args],
        env={**os.environ, "KBENCH_TIMEOUT_S": "1", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_silent_s3_endpoint(silent, tmp_path):
    env = {"AWS_ENDPOINT_URL": f"http://{silent}", "AWS_ACCESS_KEY_ID": "k"}
    env["AWS_SECRET_ACCESS_KEY"] = "s"
    done = kbench_process(["status", "--store", "s3://bucket/x"], env, tmp_path)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("Error: the S3 endpoint of s3://bucket/x did not answer")
    assert done.stderr.count("\n") == 1


def test_a_silent_kubernetes_api_server(silent, tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://{silent}"}}}}]
users: [{{name: u, user: {{token: t}}}}]
contexts: [{{name: ctx, context: {{cluster: c, user: u}}}}]
current-context: ctx
"""
    )
    env = {"KUBECONFIG": str(kubeconfig), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    done = kbench_process(
        ["doctor", "--image", "img", "--store", str(tmp_path / "store")], env, tmp_path
    )
    assert done.returncode == 1
    assert "cannot reach the API server at http://" in done.stdout
    assert "(ReadTimeoutError)" in done.stdout
    assert "Traceback" not in done.stderr
