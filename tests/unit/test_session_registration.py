"""A leader's session registrations are matched to their callers by (member id, nonce): never by a reused one."""

from __future__ import annotations

import random

from paxos.consensus.messages import AcceptRecord, DurableState
from paxos.replica import Replica
from protos import log_pb2
from tests.harness.polling import wait_until
from tests.harness.replicafakes import MemoryStorage, NullTransport


def _leader(seed: int) -> tuple[Replica, MemoryStorage]:
    """Member 1 of a one-member cluster, a new process of it, leading."""
    now = [0.0]
    storage = MemoryStorage()
    replica = Replica(1, [1], DurableState(), storage, NullTransport(), lambda: now[0], lambda: None, None,
                      random.Random(seed))  # fmt: skip

    def leads() -> bool:
        now[0] += 0.05
        replica.tick()
        replica.drive()
        return replica.core.is_leader()

    wait_until(leads, "member 1 to lead", timeout=5, interval=0)
    return replica, storage


def _proposed_nonces(storage: MemoryStorage) -> list[int]:
    nonces = []
    for record in storage.appended:
        if isinstance(record, AcceptRecord):
            for raw in record.value:
                command = log_pb2.LogCommand.FromString(raw)
                if command.WhichOneof("kind") == "register_session":
                    nonces.append(command.register_session.nonce)
    return nonces


def test_a_restarted_leader_never_numbers_a_registration_as_its_last_process_did() -> None:
    # A registration the first process proposed may be chosen only after it
    # crashed; were the next process to reuse its nonce, that registration's
    # session would be handed to the new caller too.
    first, first_storage = _leader(seed=1)
    first.register(lambda answer: None)
    first.drive()
    again, again_storage = _leader(seed=2)
    again.register(lambda answer: None)
    again.drive()
    [before], [after] = _proposed_nonces(first_storage), _proposed_nonces(again_storage)
    assert before != after
