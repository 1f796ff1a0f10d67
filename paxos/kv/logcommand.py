"""Client requests turned into the log's own commands (``protos/log.proto``).

The log is a durable format and the client API is not: the server copies a
client's ``kv_pb2.Command`` field by field into a ``ClientWrite`` before the
replica sees it, so either side can change without the other, and the
replica never handles the client API's messages.  Only the leader encodes a
write for the log, and only one ``statemachine.validate_command`` accepted.
"""

from __future__ import annotations

from protos import kv_pb2, log_pb2

# A client's write as the log holds it: what the replica proposes.
ClientWrite = log_pb2.ClientWrite


def from_client(cmd: kv_pb2.Command) -> ClientWrite:
    """A client's command as the log's write, unvalidated (a command with no known op gets none)."""
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
        case _:
            pass  # validate_command refuses it
    return write


def encode_write(write: ClientWrite) -> bytes:
    """The log encoding of one validated client write."""
    kind = write.WhichOneof("op")
    if kind is None:
        raise ValueError("a client write with no op cannot go into the log; validate it first")
    return log_pb2.LogCommand(client_write=write).SerializeToString()


def client_write(cmd: kv_pb2.Command) -> bytes:
    """The log encoding of one validated client command."""
    return encode_write(from_client(cmd))


def raise_cluster_version(version: int, proposer: int) -> bytes:
    """The log encoding of a raise of the cluster version to ``version``, proposed by member ``proposer``."""
    raised = log_pb2.RaiseClusterVersion(version=version, proposer=proposer)
    return log_pb2.LogCommand(raise_cluster_version=raised).SerializeToString()


def register_session(proposer: int, nonce: int) -> bytes:
    """The log encoding of a session registration proposed by member ``proposer``."""
    register = log_pb2.RegisterSession(proposer=proposer, nonce=nonce)
    return log_pb2.LogCommand(register_session=register).SerializeToString()
