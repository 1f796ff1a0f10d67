"""``python -m paxos.healthcheck [--address HOST:PORT]``: exit 0 when the
server answers the standard gRPC health check with SERVING, 1 otherwise.

Used by the Docker image's HEALTHCHECK.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paxos.limits import DEFAULT_PORT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paxos.healthcheck", description=__doc__)
    parser.add_argument("--address", default=f"127.0.0.1:{DEFAULT_PORT}", help="server to ask (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait (default %(default)s)")
    opts = parser.parse_args(argv)
    with grpc.insecure_channel(opts.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=opts.timeout)
        except grpc.RpcError as err:
            print(f"unhealthy: {opts.address}: {err.code().name.lower()}", file=sys.stderr)  # type: ignore[attr-defined]
            return 1
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        print(
            f"unhealthy: {opts.address} reports {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
