"""How a configuration is written in the log: a ``LogCommand`` holding a ``log_pb2.Configuration``, alone in its slot.

The consensus core never parses the log (paxos/consensus/membership.py):
every replica hands it ``LOG_CONFIGURATIONS``, and the state machine and
the snapshots read configurations with the same functions.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from paxos.consensus.membership import ConfigMember, ConfigurationFormat, Membership
from paxos.consensus.messages import Value
from protos import log_pb2

# The first byte of an encoded LogCommand whose kind is a configuration
# (field 2, length-delimited); a client write starts with 0x0a.
_CONFIGURATION_TAG = b"\x12"


def to_proto(membership: Membership) -> log_pb2.Configuration:
    return log_pb2.Configuration(
        members=[
            log_pb2.ConfigMember(id=m.id, name=m.name, address=m.address, voter=m.voter) for m in membership.members
        ]
    )


def from_proto(config: log_pb2.Configuration) -> Membership:
    """Raises ValueError for a configuration that cannot be used."""
    membership = Membership.of(ConfigMember(m.id, m.name, m.address, m.voter) for m in config.members)
    error = membership.shape_error()
    if error:
        raise ValueError(error)
    return membership


def command(membership: Membership) -> bytes:
    """The log command that switches the cluster to ``membership``."""
    return log_pb2.LogCommand(configuration=to_proto(membership)).SerializeToString()


def value(membership: Membership) -> Value:
    """The slot value that holds ``membership``, alone."""
    return (command(membership),)


def configuration_in(value: Value) -> Membership | None:
    """The configuration a chosen slot holds, or None for client writes.

    A configuration is alone in its slot; one that does not decode or is
    unusable counts as none (the state machine refuses and counts it).
    """
    if len(value) != 1 or value[0][:1] != _CONFIGURATION_TAG:
        return None
    cmd = log_pb2.LogCommand()
    try:
        cmd.ParseFromString(value[0])
    except DecodeError:
        return None
    if cmd.WhichOneof("kind") != "configuration":
        return None
    try:
        return from_proto(cmd.configuration)
    except ValueError:
        return None


class _LogConfigurations:
    def encode(self, membership: Membership) -> Value:
        return value(membership)

    def decode(self, value: Value) -> Membership | None:
        return configuration_in(value)


LOG_CONFIGURATIONS: ConfigurationFormat = _LogConfigurations()
