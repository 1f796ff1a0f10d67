"""Run a whole paxoskv cluster on this machine: ``python -m paxos.local``.

``python -m paxos.local [--dir DIR] [--nodes N] [--base-port P] [--no-client] [--startup-timeout SECONDS]
[--insecure] [-- SERVER_ARGS ...]``

TLS by default: certificates are made in ``DIR/tls`` on first run.  The
servers run under ``LocalCluster`` (tools/localcluster.py); this module is
the command around it: the prompt, the signals, the reports and exit codes.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from client.cli import history_path, run_prompt
from paxos.common.hostfile import HostfileError
from paxos.common.tlsfiles import BESIDE_HOSTFILE_DIR, TlsError
from tools.localcluster import (
    DEFAULT_DIR,
    DEFAULT_NODES,
    POLL_SECONDS,
    STARTUP_SECONDS,
    ClusterError,
    LocalCluster,
)

INSECURE_ENV = "PAXOSKV_INSECURE"  # 1: the launcher runs plaintext, as --insecure


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m paxos.local",
        usage=(
            "%(prog)s [--dir DIR] [--nodes N] [--base-port P] [--no-client] [--startup-timeout SECONDS]\n"
            "       [--insecure] [-- SERVER_ARGS ...]"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Start a paxoskv cluster of N servers on 127.0.0.1, wait for a leader, then open the\n"
            "client prompt.  Leaving the prompt (quit or Ctrl-D) stops every server; at the prompt\n"
            "Ctrl-C only cancels the line being typed or the command running, as in a shell.\n"
            "Outside the prompt (while starting, or with --no-client) Ctrl-C stops every server,\n"
            "and SIGTERM or SIGHUP does at any time.  A server that exits on its own is reported.\n"
            "Data and logs stay in DIR, so running it again with the same DIR brings the data back."
        ),
        epilog=(
            "Anything after '--' is passed to every server, e.g.\n"
            "  python -m paxos.local --nodes 3 -- --log-level DEBUG\n"
            "Exit codes: 0 stopped on request with every server up, 1 a server exited on its own\n"
            "(each exit is reported as it happens) or no leader was elected in time,\n"
            "2 bad usage or an unusable DIR/hostfile.txt."
        ),
    )
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"cluster directory (default ./{DEFAULT_DIR})")
    parser.add_argument("--nodes", type=int, default=DEFAULT_NODES, metavar="N", help="number of servers (default 5)")
    parser.add_argument("--base-port", type=int, metavar="P", help="use ports P..P+N-1 (default: any free ports)")
    parser.add_argument("--no-client", action="store_true", help="no prompt: keep the servers up until Ctrl-C/SIGTERM")
    parser.add_argument(
        "--insecure", action="store_true", default=os.environ.get(INSECURE_ENV, "") == "1",
        help=(
            f"run plaintext, without certificates (default: TLS with certificates made in DIR/{BESIDE_HOSTFILE_DIR} "
            f"on first run; {INSECURE_ENV}=1 does the same)"
        ),
    )  # fmt: skip
    parser.add_argument(
        "--startup-timeout", type=float, default=STARTUP_SECONDS, metavar="SECONDS",
        help=f"give up if no leader is elected within this long (default {STARTUP_SECONDS:g})",
    )  # fmt: skip
    return parser


def _say(message: str) -> None:
    print(f"[paxos.local] {message}", file=sys.stderr, flush=True)


class _Terminated(BaseException):
    """SIGTERM or SIGHUP arrived.  Not a KeyboardInterrupt, which the prompt takes as "cancel this line"."""


def _raise_on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Terminated  # unwinds to the `finally` that stops the servers


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _banner(cluster: LocalCluster, leader: str) -> str:
    hostfile = _display(cluster.hostfile)
    tls = f"TLS, certificates in {_display(cluster.tls_dir)}" if cluster.tls_dir else "plaintext (--insecure)"
    return (
        f"paxoskv: {len(cluster.names)} servers on 127.0.0.1 ({', '.join(cluster.names)}), leader {leader}\n"
        f"  hostfile: {hostfile}\n"
        f"  security: {tls}\n"
        f"  logs:     {_display(cluster.directory)}/NAME.log, data in {_display(cluster.directory)}/NAME/\n"
        f"  connect from another terminal:  python -m client -h {hostfile}"
    )


def describe_exit(code: int) -> str:
    """How a process ended, from its ``Popen.returncode``."""
    if code < 0:
        try:
            return f"signal {-code}, {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


class _ExitWatcher:
    """Reports each server that exits on its own, once and as it happens, and reaps it.

    Runs in its own thread because the prompt holds the main thread; the
    prompt keeps its line intact while this prints (see ``run_prompt``).
    """

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.lost: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paxos.local exit watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Stop watching (before the servers are stopped on purpose), reporting any last exit."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.check()

    def check(self) -> None:
        for name, code in self.cluster.reap_exited():
            self.lost.append(name)
            up, total = self.cluster.running_count(), len(self.cluster.names)
            log = _display(self.cluster.log_path(name))
            _say(f"{name} exited ({describe_exit(code)}); {up} of {total} up; see {log}")

    def _run(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self.check()


def _serve_until_stopped(cluster: LocalCluster, no_client: bool) -> None:
    if not no_client:
        print(
            "  quit or Ctrl-D leaves the prompt and stops the cluster; Ctrl-C cancels the line being typed",
            file=sys.stderr,
            flush=True,
        )
        with cluster.client() as kv:
            run_prompt(kv, history=history_path(cluster.hostfile))
        return
    print("  Ctrl-C stops the cluster", file=sys.stderr, flush=True)
    while True:
        time.sleep(3600.0)  # the exit watcher reports; a signal ends this


def split_server_args(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The launcher's own arguments, and those after ``--`` for every server."""
    args = list(argv)
    if "--" in args:
        cut = args.index("--")
        return args[:cut], args[cut + 1 :]
    return args, []


def main(argv: Sequence[str] | None = None) -> int:
    own, server_args = split_server_args(sys.argv[1:] if argv is None else argv)
    opts = build_parser().parse_args(own)
    try:
        cluster = LocalCluster(opts.dir, opts.nodes, opts.base_port, server_args, tls=not opts.insecure)
    except (ClusterError, HostfileError, TlsError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_on_signal)
    watcher = _ExitWatcher(cluster)
    code = 0
    try:
        reuse = " (reused, so the data of earlier runs is kept)" if cluster.reused_hostfile else ""
        if cluster.reused_hostfile and opts.base_port:
            reuse += "; --base-port is ignored"
        if cluster.new_certificates:
            _say(f"made TLS certificates in {_display(cluster.tls_dir or cluster.directory)}")
        if cluster.tls_dir is None:
            _say("--insecure: plaintext, anyone who can reach the ports can act as a member or client")
        _say(f"starting {len(cluster.names)} servers from {_display(cluster.hostfile)}{reuse}")
        cluster.start()
        leader = cluster.wait_for_leader(opts.startup_timeout, progress=lambda report: _say(f"waiting: {report}"))
        print(_banner(cluster, leader), file=sys.stderr, flush=True)
        watcher.start()
        _serve_until_stopped(cluster, opts.no_client)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    except OSError as exc:
        print(f"error: cannot start a server: {exc}", file=sys.stderr)
        code = 1
    except (KeyboardInterrupt, _Terminated):
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # stopping is bounded; do not leave it half done
        watcher.close()
        missing = f" ({', '.join(watcher.lost)} had exited)" if watcher.lost else ""
        _say(f"stopping the servers{missing}")
        cluster.stop()
    return 1 if watcher.lost else code


if __name__ == "__main__":
    sys.exit(main())
