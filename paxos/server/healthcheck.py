"""``python -m paxos.healthcheck [--address HOST:PORT] [--tls-dir DIR]``: exit 0 when the
server answers the standard gRPC health check with SERVING, 1 otherwise
(2 for a TLS directory that cannot be read).

With TLS (``--tls-dir`` or $PAXOSKV_TLS_DIR) it trusts DIR/ca.pem and
presents DIR/client.pem, as any client does.

Used by the Docker image's HEALTHCHECK.
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paxos.common.limits import DEFAULT_PORT
from paxos.common.tlsfiles import TLS_DIR_ENV, TlsError, client_credentials, mismatch_hint, tls_dir_from_env

EXIT_USAGE = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m paxos.healthcheck", description=__doc__)
    parser.add_argument("--address", default=f"127.0.0.1:{DEFAULT_PORT}", help="server to ask (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait (default %(default)s)")
    parser.add_argument(
        "--tls-dir",
        default=tls_dir_from_env(),
        metavar="DIR",
        help=f"connect with TLS using DIR/ca.pem and DIR/client.pem (default ${TLS_DIR_ENV}, else plaintext)",
    )
    opts = parser.parse_args(argv)
    try:
        credentials = client_credentials(opts.tls_dir) if opts.tls_dir else None
    except TlsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if credentials is None:
        channel = grpc.insecure_channel(opts.address)
    else:
        channel = grpc.secure_channel(opts.address, credentials)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=opts.timeout)
        except grpc.RpcError as err:
            code = err.code().name.lower()  # type: ignore[attr-defined]
            hint = mismatch_hint(err.details() or "", credentials is not None)  # type: ignore[attr-defined]
            print(f"unhealthy: {opts.address}: {code}" + (f" ({hint})" if hint else ""), file=sys.stderr)
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
