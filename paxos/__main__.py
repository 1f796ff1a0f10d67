"""``python -m paxos -h HOSTFILE -n NAME [--data-dir DIR]``: run one server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import TypeVar

from paxos.common import limits, logformat, versions
from paxos.common.files import DiskFull
from paxos.common.hostfile import HostfileError, find_member, parse_hostfile
from paxos.common.tlsfiles import TlsError
from paxos.kv.statemachine import ClusterVersionTooNew
from paxos.server.founding import check_founding
from paxos.server.join import discover_cluster
from paxos.server.service import PaxosServer
from paxos.server.tlsaccess import CLIENT_AUTH_CERT, CLIENT_AUTH_MODES
from paxos.storage import snapshot
from paxos.storage.datadir import LOCK_FILE, DataDirError, DataDirLock, lock_data_dir
from paxos.storage.meta import SNAPSHOT_DIR, WAL_DIR, JoinTarget, check_data_dir, data_dir_is_joining
from paxos.storage.wal import Wal, WalCorruption

EXIT_USAGE = 2
EXIT_DATA = 4
EXIT_INTERNAL = 1
EXIT_DISK_FULL = 5

log = logging.getLogger("paxos")


def _prog_name() -> str:
    """How the server was started: ``paxoskv-server`` when installed, else ``python -m paxos``."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m paxos" if name in ("", "__main__.py", "-c") else name


def build_parser() -> argparse.ArgumentParser:
    prog = _prog_name()
    parser = argparse.ArgumentParser(
        prog=prog,
        add_help=False,
        description="Run one paxoskv server: a Multi-Paxos replica of the key-value store.",
        epilog=(
            f"Example: {prog} -h hostfile.txt -n container0\n"
            "Exit codes: 0 stopped cleanly, 1 internal error (see the log), 2 bad usage, hostfile, address or TLS "
            "files, 4 data directory refused, in use by another server, its log or snapshots are damaged or lost, "
            "or empty while the other servers knew an earlier one of this server (the error says how to replace "
            "it), or the cluster runs a cluster version newer than this release can (the error names the release "
            "to start), 5 disk "
            "full (a write to the data dir found no room; the log names the file and the bytes free).\n"
            f"To seed a new server's data dir from a backup: {prog} restore FILE -h HOSTFILE -n NAME --data-dir DIR "
            f"(see {prog} restore --help).\n"
            "Runs on uvloop when it is installed; PAXOSKV_UVLOOP=0 selects the standard asyncio loop."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument(
        "-h", "--hostfile", required=True, metavar="HOSTFILE", help="file naming every server of the cluster"
    )
    parser.add_argument("-n", "--name", required=True, metavar="NAME", help="this server's name in the hostfile")
    parser.add_argument(
        "--data-dir", type=Path, metavar="DIR", help="where the write-ahead log lives (default ./data/NAME)"
    )
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address to bind (default 0.0.0.0 and this server's port from the hostfile)",
    )
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        default=os.environ.get("PAXOSKV_METRICS") or None,
        help=(
            "serve Prometheus metrics at http://HOST:PORT/metrics and a health probe at /healthz "
            "(default: $PAXOSKV_METRICS, else off)"
        ),
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        metavar="N",
        help=(
            "accept at most N connections, from clients and peers together (default: the open-file limit, "
            f"raised to the hard limit at start, less {limits.FD_HEADROOM})"
        ),
    )
    parser.add_argument(
        "--tls-dir",
        type=Path,
        metavar="DIR",
        help=(
            "serve TLS only, with DIR/NAME.pem and DIR/NAME-key.pem, trusting DIR/ca.pem (python -m paxos.certs "
            "creates them); peers must present their member certificate.  Without it the server runs plaintext"
        ),
    )
    parser.add_argument(
        "--client-auth",
        choices=CLIENT_AUTH_MODES,
        help=(
            "with --tls-dir: 'cert' (default) lets only clients with a certificate from the CA use the client API; "
            "'none' accepts any TLS client"
        ),
    )
    parser.add_argument(
        "--max-value-bytes",
        type=int,
        default=limits.DEFAULT_MAX_VALUE_BYTES,
        metavar="N",
        help=(
            f"largest value this server accepts in a set (default {limits.DEFAULT_MAX_VALUE_BYTES}, "
            f"at most {limits.MAX_VALUE_BYTES_CEILING})"
        ),
    )
    parser.add_argument(
        "--snapshot-every",
        type=int,
        default=limits.SNAPSHOT_EVERY_COMMANDS,
        metavar="N",
        help=(
            f"snapshot the state and compact the log after N applied commands (default "
            f"{limits.SNAPSHOT_EVERY_COMMANDS}); it also happens once the log reaches "
            f"{limits.SNAPSHOT_LOG_BYTES // 2**20} MiB"
        ),
    )
    parser.add_argument(
        "--max-cluster-version",
        type=int,
        default=versions.MAX_CLUSTER_VERSION,
        metavar="N",
        help=(
            f"report that this server runs cluster versions up to N (default {versions.MAX_CLUSTER_VERSION}, the "
            f"most release {versions.RELEASE} runs; at least {versions.BASE_CLUSTER_VERSION}). The leader raises "
            "the cluster version once every member reports it, so a lower N holds the raise back, for instance "
            "while the previous release may still be needed"
        ),
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO"
    )
    parser.add_argument(
        "--log-format",
        default="text",
        choices=logformat.FORMATS,
        help="text (default) or json: one JSON object per line with the member name, and ballot and slot "
        "where a line is about one",
    )
    parser.add_argument(
        "--join",
        action="store_true",
        help=(
            "this server is being added to a running cluster: with an empty data dir, learn the cluster from the "
            "other servers in the hostfile and wait as a non-member until added (python -m client members add NAME "
            "HOST:PORT, or members sync); ignored once the server has been added. Without --join an empty data "
            "dir founds a new cluster of the hostfile's servers, once they confirm that none of them knew an "
            "earlier data dir of this server (else it exits 4)"
        ),
    )
    parser.add_argument(
        "--join-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="with --join, how long to wait for a server of the cluster to answer (default: 600)",
    )
    parser.add_argument(
        "--enable-fault-injection",
        action="store_true",
        help="let tests cut this server off from peers (never in production)",
    )
    return parser


async def _serve(server: PaxosServer, listen: str, metrics: str | None, max_connections: int | None) -> int:
    try:
        await server.start(listen, metrics, max_connections)
    except BaseException:
        await server.stop()  # closes the log and unlocks the data dir before we report
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    waits = [asyncio.create_task(stop.wait()), asyncio.create_task(server.failed.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    log.info("shutting down")
    await server.stop()
    if server.disk_full is not None:
        return EXIT_DISK_FULL
    if server.too_new is not None:
        print(f"error: {server.too_new}", file=sys.stderr)
        return EXIT_DATA
    return EXIT_INTERNAL if server.failed.is_set() else 0


T = TypeVar("T")


def _run(main: Coroutine[None, None, T]) -> T:
    """Run on uvloop when it is installed (unless PAXOSKV_UVLOOP=0), else on asyncio.

    uvloop gave about 10% more throughput in A/B runs (docs/benchmarks/profile.md).
    """
    if os.environ.get("PAXOSKV_UVLOOP", "1") != "0":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(main)
    return asyncio.run(main)


def build_restore_parser() -> argparse.ArgumentParser:
    prog = f"{_prog_name()} restore"
    parser = argparse.ArgumentParser(
        prog=prog,
        add_help=False,
        description=(
            "Seed a new server's data dir from a backup (python -m client backup FILE). Restore the same "
            "backup for every server named in the hostfile, then start them: they form a new cluster "
            "holding the backup's data, client sessions included. A server left out starts empty and "
            "fetches the state from the others."
        ),
        epilog=(
            f"Example: {prog} backup.snap -h hostfile.txt -n container0 --data-dir data/container0\n"
            "Exit codes: 0 restored, 2 bad usage, hostfile or missing file, 4 damaged backup, backup of "
            "another format, or a data dir that is not empty (nothing is changed), 5 disk full."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("file", type=Path, metavar="FILE", help="the backup file")
    parser.add_argument("-h", "--hostfile", required=True, metavar="HOSTFILE", help="the new cluster's hostfile")
    parser.add_argument("-n", "--name", required=True, metavar="NAME", help="this server's name in the hostfile")
    parser.add_argument("--data-dir", type=Path, metavar="DIR", help="the data dir to create (default ./data/NAME)")
    return parser


def _undo_restore(data_dir: Path, existed: bool, lock: DataDirLock) -> None:
    """Leave the data dir as it was: empty, or not there at all."""
    for child in list(data_dir.iterdir()):
        if child.is_dir():
            shutil.rmtree(child)
        elif child.name != LOCK_FILE:
            child.unlink()
    lock.release()
    if not existed:
        shutil.rmtree(data_dir, ignore_errors=True)


def restore(argv: list[str]) -> int:
    opts = build_restore_parser().parse_args(argv)
    try:
        members = parse_hostfile(opts.hostfile)
        find_member(members, opts.name, opts.hostfile)
    except HostfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not opts.file.is_file():
        print(f"error: {opts.file}: no such backup file", file=sys.stderr)
        return EXIT_USAGE
    try:
        info, _ = snapshot.load(opts.file)  # every frame checked, and the state decodes
    except snapshot.SnapshotError as exc:
        print(f"error: {exc}; nothing was restored", file=sys.stderr)
        return EXIT_DATA
    data_dir: Path = opts.data_dir or Path("data") / opts.name
    existed = data_dir.exists()
    if existed and any(p.name != LOCK_FILE for p in data_dir.iterdir()):
        print(
            f"error: {data_dir} is not empty; a restore seeds a new server's data dir (move it away first)",
            file=sys.stderr,
        )
        return EXIT_DATA
    try:
        lock = lock_data_dir(data_dir)
    except DataDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DATA
    except DiskFull as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DISK_FULL
    try:
        identity = check_data_dir(data_dir, opts.name, members)
        Wal.open(data_dir / WAL_DIR)[0].close()  # an empty log beside the snapshot: it holds every slot
        ids = identity.ids
        new_members = [snapshot.SnapshotMember(ids[m.name], m.name, m.address) for m in members]
        snapshot.rewrite_for_cluster(opts.file, data_dir / SNAPSHOT_DIR, identity.cluster_id, new_members)
    except DiskFull as exc:
        _undo_restore(data_dir, existed, lock)
        print(f"error: {exc}; nothing was restored", file=sys.stderr)
        return EXIT_DISK_FULL
    except BaseException:
        _undo_restore(data_dir, existed, lock)
        raise
    lock.release()
    print(
        f"restored every slot up to {info.applied_index} into {data_dir} for {opts.name}; "
        f"start it with: {_prog_name()} -h {opts.hostfile} -n {opts.name} --data-dir {data_dir}"
    )
    return 0


def _is_empty(data_dir: Path) -> bool:
    """Whether ``data_dir`` holds nothing yet (a lock file aside): a new server's, to found or join with."""
    return not data_dir.exists() or all(p.name == LOCK_FILE for p in data_dir.iterdir())


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["restore"]:
        logging.basicConfig(level=logging.WARNING)
        return restore(args[1:])
    opts = build_parser().parse_args(args)
    if not versions.BASE_CLUSTER_VERSION <= opts.max_cluster_version <= versions.MAX_CLUSTER_VERSION:
        print(
            f"error: --max-cluster-version must be from {versions.BASE_CLUSTER_VERSION} to "
            f"{versions.MAX_CLUSTER_VERSION} (release {versions.RELEASE} runs no later cluster version)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    logformat.configure(opts.log_level, opts.log_format, opts.name)
    try:
        members = parse_hostfile(opts.hostfile)
        me = members[find_member(members, opts.name, opts.hostfile)]
    except HostfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not 1 <= opts.max_value_bytes <= limits.MAX_VALUE_BYTES_CEILING:
        print(f"error: --max-value-bytes must be from 1 to {limits.MAX_VALUE_BYTES_CEILING}", file=sys.stderr)
        return EXIT_USAGE
    if opts.snapshot_every < 1:
        print("error: --snapshot-every must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if opts.max_connections is not None and opts.max_connections < limits.MIN_CONNECTION_CAP:
        print(f"error: --max-connections must be at least {limits.MIN_CONNECTION_CAP}", file=sys.stderr)
        return EXIT_USAGE
    data_dir = opts.data_dir or Path("data") / opts.name
    listen = opts.listen or f"0.0.0.0:{me.port}"
    tls = None
    if opts.client_auth is not None and opts.tls_dir is None:
        print("error: --client-auth needs --tls-dir (without TLS nobody is authenticated)", file=sys.stderr)
        return EXIT_USAGE
    if opts.tls_dir is not None:
        from paxos.server.tlsserver import ServerTls  # cryptography: only when serving TLS

        try:
            tls = ServerTls(opts.tls_dir, opts.name, opts.client_auth or CLIENT_AUTH_CERT)
        except TlsError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
    join: JoinTarget | None = None
    try:
        if opts.join and data_dir_is_joining(data_dir) is not False:
            join = _run(discover_cluster(members, opts.name, tls, opts.join_timeout))
        elif not opts.join and data_dir_is_joining(data_dir) is None and _is_empty(data_dir):
            _run(check_founding(members, opts.name, tls, listen, opts.max_cluster_version))
        server = PaxosServer(
            members,
            opts.name,
            data_dir,
            opts.max_value_bytes,
            fault_injection=opts.enable_fault_injection,
            snapshot_every=opts.snapshot_every,
            tls=tls,
            join=join,
            max_cluster_version=opts.max_cluster_version,
        )
    except (DataDirError, WalCorruption, ClusterVersionTooNew) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DATA
    except DiskFull as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DISK_FULL
    except OSError as exc:  # the founding check could not listen
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return _run(_serve(server, listen, opts.metrics, opts.max_connections))
    except DiskFull as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DISK_FULL
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
