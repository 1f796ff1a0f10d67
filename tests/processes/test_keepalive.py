"""Idle peers keep their connections: no server answers the others' keepalive pings with GOAWAY too_many_pings."""

from __future__ import annotations

import time
from pathlib import Path

from tests.harness.polling import wait_until
from tools.localcluster import LocalCluster

# The peers ping every 10 s (grpc.keepalive_time_ms); with the server's ping
# policy unset, gRPC's default (one ping per 5 minutes without data, two
# strikes) sent GOAWAY within two to three minutes of idling.
IDLE_SECONDS = 240.0
TOO_MANY_PINGS = "too_many_pings"


def test_idle_peers_are_not_told_too_many_pings(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, nodes=3) as cluster:
        cluster.wait_for_leader()
        with cluster.client() as kv:
            kv.set("k", "v")  # then nothing: the peer channels idle on keepalive pings alone

        def complaint() -> str | None:
            for name in cluster.names:
                for line in cluster.log_path(name).read_text(errors="replace").splitlines():
                    if TOO_MANY_PINGS in line:
                        return f"{name}: {line}"
            return None

        idle_until = time.monotonic() + IDLE_SECONDS
        # Stops at the first complaint, else after the idle period: absence can only be watched for a while.
        found = wait_until(
            lambda: complaint() or time.monotonic() >= idle_until, "idle period", timeout=IDLE_SECONDS + 30, interval=1
        )
        cluster.check_alive()
        assert found is True, found
