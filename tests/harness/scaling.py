"""Membership changes on real server processes under a recorded client load.

``python -m tests.harness.scaling [--dir DIR] [--keep]``

Five servers on loopback found a cluster; client threads (``tests.harness.nemesis``'s
workers) do random set/get/delete the whole time and record a history.  Then,
each step through ``KVClient.sync_members`` with a new hostfile:

1. grow 5 -> 7: two servers start with ``--join`` and are added; while the
   sync runs, the leader is killed with SIGKILL in the middle of a change and
   restarted;
2. shrink 7 -> 3: the three kept exclude the current leader, so the leader
   removes itself; the removed servers are stopped afterwards;
3. grow 3 -> 5: two of the removed servers come back under their old names
   on fresh data dirs (a replaced machine) with ``--join``.

At the end every key is read once more, the history must be linearizable
(``tests.harness.lincheck``: so every acknowledged write is visible, or overwritten
by a later one), ``members --json`` from the command line must list exactly
the last hostfile's servers, all voters, and no server may have crashed or
logged a traceback.  The directory keeps logs on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from client import KVClient, KVError
from paxos.common.hostfile import Member
from tests.harness import PROJECT
from tests.harness.cli import run_cli
from tests.harness.inprocess import free_ports
from tests.harness.lincheck import Op, check
from tests.harness.nemesis import Clock, History, Worker

CLIENTS = 4
KEYS = 5
CLIENT_TIMEOUT = 3.0
SYNC_SECONDS = 120.0
LEADER_SECONDS = 30.0


@dataclass
class Server:
    name: str
    address: str
    data_dir: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0


@dataclass
class Scaling:
    directory: Path
    servers: dict[str, Server] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    clock: Clock = field(default_factory=Clock)
    removed: set[str] = field(default_factory=set)  # may refuse to start again on their old data
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)  # every process, for the final cleanup
    exits: list[str] = field(default_factory=list)  # servers that exited on their own

    def note(self, text: str) -> None:
        line = f"{self.clock():8.3f}s {text}"
        self.notes.append(line)
        print(line, flush=True)

    def hostfile(self, label: str, names: Sequence[str]) -> Path:
        path = self.directory / f"hostfile-{label}.txt"
        path.write_text("".join(f"{n} {self.servers[n].address}\n" for n in names))
        return path

    def start(self, name: str, hostfile: Path, join: bool) -> None:
        server = self.servers[name]
        command = [sys.executable, "-m", "paxos", "-h", str(hostfile), "-n", name]
        command += ["--data-dir", str(server.data_dir), "--listen", server.address]
        command += ["--join"] if join else []
        env = {**os.environ, "PYTHONPATH": str(PROJECT), "PAXOSKV_INSECURE": "1"}
        out = server.log.open("ab")
        server.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.started.append(server.process)
        out.close()
        server.starts += 1
        self.note(f"started {name}{' --join' if join else ''}")

    def kill(self, name: str) -> None:
        server = self.servers[name]
        assert server.process is not None
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        server.process = None
        self.note(f"kill -9 {name}")

    def stop(self, name: str) -> None:
        server = self.servers[name]
        if server.process is not None:
            status = server.process.poll()
            if status is not None and not (status == 4 and name in self.removed):
                self.exits.append(f"{name} exited on its own with status {status}")
            server.process.terminate()
            server.process.wait(20)
            server.process = None
            self.note(f"stopped {name}")

    def crashed(self) -> list[str]:
        return [
            f"{s.name} exited on its own with status {s.process.returncode}"
            for s in self.servers.values()
            if s.process is not None and s.process.poll() is not None
        ]

    def leader(self, kv: KVClient) -> str:
        deadline = time.monotonic() + LEADER_SECONDS
        while True:
            try:
                leaders = [m.name for m in kv.members() if m.leader]
            except KVError:
                leaders = []
            if len(leaders) == 1:
                return leaders[0]
            if time.monotonic() > deadline:
                raise AssertionError("no leader")
            time.sleep(0.1)


def run(directory: Path) -> list[str]:
    """One whole run; the anomalies found (empty: passed)."""
    s = Scaling(directory)
    try:
        return _run(s)
    finally:
        for process in s.started:  # whatever a failure left running
            if process.poll() is None:
                process.kill()
                process.wait(10)


def _run(s: Scaling) -> list[str]:
    directory = s.directory
    names = [f"n{i}" for i in range(7)]
    ports = free_ports(len(names))
    for name, port in zip(names, ports, strict=True):
        s.servers[name] = Server(name, f"127.0.0.1:{port}", directory / name, directory / f"{name}.log")
    founders = names[:5]
    first = s.hostfile("5", founders)
    everyone = s.hostfile("all", names)
    for name in founders:
        s.start(name, first, join=False)
    history, stop = History(), threading.Event()
    anomalies: list[str] = []
    config = SimpleNamespace(client_timeout=CLIENT_TIMEOUT, keys=KEYS, seed=1)
    workers = [
        Worker(i, SimpleNamespace(hostfile=everyone), config, history, s.clock, stop)  # type: ignore[arg-type]
        for i in range(CLIENTS)
    ]
    with KVClient([Member(n, "127.0.0.1", port) for n, port in zip(names, ports, strict=True)], timeout=10) as admin:
        s.note(f"leader {s.leader(admin)}")
        for worker in workers:
            worker.start()
        # 1. Grow to seven, with the leader killed in the middle of a change.
        for name in names[5:]:
            s.start(name, everyone, join=True)
        seven = s.hostfile("7", names)
        killed = threading.Event()

        def kill_leader() -> None:
            victim = s.leader(admin)
            s.kill(victim)
            joined = victim in names[5:]
            threading.Timer(1.0, s.start, (victim, everyone if joined else first, joined)).start()

        def kill_mid_change(step: str) -> None:
            s.note(f"sync: {step}")
            if not killed.is_set() and "promoting" in step:
                # The promotion's request is on its way: the leader dies with it in flight.
                killed.set()
                threading.Timer(0.05, kill_leader).start()

        s.note("growing to 7")
        admin.sync_members(seven, timeout=SYNC_SECONDS, progress=kill_mid_change)
        assert killed.is_set(), "the leader was never killed during a change"
        # 2. Shrink to three, the current leader among those removed.
        leader = s.leader(admin)
        kept = [n for n in names if n != leader][-3:]
        three = s.hostfile("3", kept)
        s.note(f"shrinking to {kept} (leader {leader} leaves)")
        admin.sync_members(three, timeout=SYNC_SECONDS, progress=lambda step: s.note(f"sync: {step}"))
        removed = [n for n in names if n not in kept]
        s.removed.update(removed)
        for name in removed:
            s.stop(name)
        # 3. Two removed servers come back on fresh data dirs (replaced machines).
        back = removed[:2]
        for name in back:
            shutil.rmtree(s.servers[name].data_dir)
        five = s.hostfile("5-again", [*kept, *back])
        for name in back:
            s.start(name, five, join=True)
        s.note(f"growing to {sorted([*kept, *back])}")
        admin.sync_members(five, timeout=SYNC_SECONDS, progress=lambda step: s.note(f"sync: {step}"))
        stop.set()
        for worker in workers:
            worker.join(CLIENT_TIMEOUT * 4)
            if worker.is_alive():
                anomalies.append(f"{worker.name} did not stop (hang)")
        for i in range(KEYS):
            key = f"k{i}"
            call = s.clock()
            value = admin.get(key)
            history.record(Op("final", key, "get", None, call, s.clock(), value), "get", "ok")
    anomalies += history.anomalies
    anomalies += s.crashed() + s.exits
    verdict = check(history.ops)
    if not verdict.ok:
        anomalies.append(f"history is not linearizable (key {verdict.key!r})")
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "PAXOSKV_INSECURE": "1"}
    listed = run_cli(five, "members", "--json", timeout=None, env=env)
    members = json.loads(listed.stdout)["members"] if listed.returncode == 0 else []
    wanted = sorted([*kept, *back])
    if sorted(m["name"] for m in members) != wanted or not all(m["voter"] for m in members):
        anomalies.append(f"members --json lists {members} (exit {listed.returncode}), not {wanted} as voters")
    for server in s.servers.values():
        if server.log.exists() and "Traceback" in server.log.read_text(errors="replace"):
            anomalies.append(f"{server.name}'s log holds a traceback")
    for name in list(s.servers):
        s.stop(name)
    ok_writes = history.counts["set"]["ok"]
    s.note(f"{len(history.ops)} operations recorded ({ok_writes} acknowledged writes); anomalies: {len(anomalies)}")
    if ok_writes == 0:
        anomalies.append("no write succeeded: the load did nothing")
    return anomalies


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help="working directory (default: a fresh temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the directory even when the run passes")
    opts = parser.parse_args(argv)
    directory = opts.dir or Path(tempfile.mkdtemp(prefix="paxoskv-scaling-"))
    directory.mkdir(parents=True, exist_ok=True)
    anomalies = run(directory)
    for line in anomalies:
        print(f"ANOMALY: {line}")
    if anomalies or opts.keep:
        print(f"logs in {directory}")
    else:
        shutil.rmtree(directory, ignore_errors=True)
    return 1 if anomalies else 0


if __name__ == "__main__":
    sys.exit(main())
