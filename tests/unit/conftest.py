"""The fast tier stays fast: a unit test that starts a process or a server fails, naming the tier it belongs in."""

from __future__ import annotations

import subprocess
from typing import Any, NoReturn

import grpc
import grpc.aio
import pytest

from paxos.server.service import PaxosServer


def _refuse(what: str, tier: str) -> Any:
    def refused(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(f"a unit test may not start {what}: move the test to tests/{tier}/")

    return refused


@pytest.fixture(autouse=True)
def _no_processes_or_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess.Popen, "__init__", _refuse("a subprocess", "processes"))
    monkeypatch.setattr(PaxosServer, "start", _refuse("a server", "inprocess"))
    monkeypatch.setattr(grpc, "server", _refuse("a gRPC server", "inprocess"))
    monkeypatch.setattr(grpc.aio, "server", _refuse("a gRPC server", "inprocess"))
