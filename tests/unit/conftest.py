"""The fast tier: tests that start no process and no server, a few minutes in all on two cores
(`make test-fast`). Held to it: a test here that starts a subprocess, forks, opens a listening
socket or asks for a server fixture fails, and belongs in tests/e2e."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

SERVERS = {"s3_server", "s3_env", "cluster"}


@pytest.fixture(autouse=True)
def no_process_and_no_server(request, monkeypatch) -> None:
    servers = SERVERS & set(request.fixturenames)
    assert not servers, f"the fast tier starts no server ({', '.join(servers)}): tests/e2e"

    def refuse(what: str):
        def refused(*args, **kwargs):
            raise AssertionError(f"the fast tier {what}: move this test to tests/e2e")

        return refused

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("starts no process"))
    monkeypatch.setattr(os, "fork", refuse("forks no process"))
    monkeypatch.setattr(socket.socket, "listen", refuse("opens no server"))
