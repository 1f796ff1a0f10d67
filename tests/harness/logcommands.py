"""Commands as the log holds them, built by hand, and a state machine fed one slot at a time."""

from __future__ import annotations

from paxos.kv import logcommand
from paxos.kv.statemachine import Applied, StateMachine
from protos import log_pb2


def cmd(
    client: str | int,
    seq: int,
    *,
    set: tuple[str, str] | None = None,
    delete: str | None = None,
    first_unacked: int = 0,
) -> bytes:
    """A write as the log holds it.  Built directly, not through the leader's
    conversion, so that commands the leader would never propose can be chosen.

    ``client``: a registered session's number, or a client id as logs from
    before sessions were registered hold them (such a write opens its session).
    """
    if isinstance(client, int):
        write = log_pb2.ClientWrite(session_id=client, seq=seq, first_unacked=first_unacked)
    else:
        write = log_pb2.ClientWrite(client_id=client, seq=seq, first_unacked=first_unacked)
    if set is not None:
        write.set.key, write.set.value = set
    if delete is not None:
        write.delete.key = delete
    return log_pb2.LogCommand(client_write=write).SerializeToString()


def image(client: str | int, seq: int, hashes: list[bytes], metadata: str = "m") -> bytes:
    write = log_pb2.ClientWrite(seq=seq, iset=log_pb2.ImageSetOp(hashes=hashes, metadata=metadata))
    if isinstance(client, int):
        write.session_id = client
    else:
        write.client_id = client
    return log_pb2.LogCommand(client_write=write).SerializeToString()


def register(nonce: int = 1, proposer: int = 7) -> bytes:
    return logcommand.register_session(proposer, nonce)


class Applier:
    """A state machine fed one command per slot."""

    def __init__(self, sm: StateMachine | None = None) -> None:
        self.sm = sm or StateMachine()

    def __call__(self, *commands: bytes) -> list[Applied]:
        return self.sm.apply(self.sm.applied_index + 1, tuple(commands))
