"""A ChangeMembers request as a configuration: one step from the current one, or why it cannot be made.

Pure: the request's names, addresses and ids are checked here, and the
step rule of paxos/consensus/membership.py decides the rest.
"""

from __future__ import annotations

from paxos.common import limits
from paxos.common.hostfile import HostfileError, parse_address, valid_name
from paxos.consensus.membership import ConfigMember, Membership
from protos import kv_pb2


def membership_after(current: Membership, request: kv_pb2.ChangeMembersRequest) -> tuple[Membership | None, str]:
    """The configuration one ChangeMembers step asks for, or None and why it cannot be made."""
    match request.WhichOneof("change"):
        case "add":
            add = request.add
            if not valid_name(add.name):
                return None, f"{add.name!r} is not a valid server name (letters, digits, '.', '_', '-')"
            try:
                parse_address(add.name, add.address)
            except HostfileError:
                return None, f"{add.address!r} is not HOST:PORT with a port from 1 to 65535"
            if not 0 < add.id <= limits.MAX_MEMBER_ID:
                return None, "the new member's id (from its status) is missing or out of range"
            if current.named(add.name) is not None:
                return None, f"{add.name} is already a member"
            if current.get(add.id) is not None:
                return None, "a member already has that id"
            wanted = current.adding_learner(ConfigMember(add.id, add.name, add.address))
        case "promote":
            member = current.named(request.promote)
            if member is None:
                return None, f"no member is named {request.promote!r}"
            if member.voter:
                return None, f"{member.name} is a voter already"
            wanted = current.promoting(member.id)
        case "remove":
            member = current.named(request.remove)
            if member is None:
                return None, f"no member is named {request.remove!r}"
            if member.voter and current.voters == {member.id}:
                return None, f"{member.name} is the last voter; a cluster cannot remove its last voter"
            wanted = current.removing(member.id)
        case _:
            return None, "the request names no change (add, promote or remove)"
    error = current.step_error(wanted)
    return (None, error) if error else (wanted, "")
