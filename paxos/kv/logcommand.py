"""Client requests turned into the log's own commands (``protos/log.proto``).

The log is a durable format and the client API is not: the leader copies a
validated ``kv_pb2.Command`` field by field into a ``LogCommand``, so either
side can change without the other.  Only the leader calls this, and only on
commands ``statemachine.validate_command`` accepted.
"""

from __future__ import annotations

from protos import kv_pb2, log_pb2


def client_write(cmd: kv_pb2.Command) -> bytes:
    """The log encoding of one validated client write."""
    # session_required: a write this version proposes never opens a session
    # of its own, even under a client_id (see statemachine.py).
    write = log_pb2.ClientWrite(
        client_id=cmd.client_id,
        session_id=cmd.session_id,
        session_required=True,
        seq=cmd.seq,
        first_unacked=cmd.first_unacked,
    )
    match cmd.WhichOneof("op"):
        case "set":
            write.set.key = cmd.set.key
            write.set.value = cmd.set.value
        case "delete":
            write.delete.key = cmd.delete.key
        case "iset":
            write.iset.hashes.extend(cmd.iset.hashes)
            write.iset.metadata = cmd.iset.metadata
        case kind:
            raise ValueError(f"a client command with op {kind!r} cannot go into the log; validate it first")
    return log_pb2.LogCommand(client_write=write).SerializeToString()


def register_session(proposer: int, nonce: int) -> bytes:
    """The log encoding of a session registration proposed by member ``proposer``."""
    register = log_pb2.RegisterSession(proposer=proposer, nonce=nonce)
    return log_pb2.LogCommand(register_session=register).SerializeToString()
