from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Ballot(_message.Message):
    __slots__ = ("round", "node")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    round: int
    node: int
    def __init__(self, round: _Optional[int] = ..., node: _Optional[int] = ...) -> None: ...

class Value(_message.Message):
    __slots__ = ("commands",)
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    commands: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, commands: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Entry(_message.Message):
    __slots__ = ("slot", "ballot", "value")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    BALLOT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    slot: int
    ballot: Ballot
    value: Value
    def __init__(self, slot: _Optional[int] = ..., ballot: _Optional[_Union[Ballot, _Mapping]] = ..., value: _Optional[_Union[Value, _Mapping]] = ...) -> None: ...

class PreVote(_message.Message):
    __slots__ = ("ballot",)
    BALLOT_FIELD_NUMBER: _ClassVar[int]
    ballot: Ballot
    def __init__(self, ballot: _Optional[_Union[Ballot, _Mapping]] = ...) -> None: ...

class PreVoteReply(_message.Message):
    __slots__ = ("ballot", "granted")
    BALLOT_FIELD_NUMBER: _ClassVar[int]
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    ballot: Ballot
    granted: bool
    def __init__(self, ballot: _Optional[_Union[Ballot, _Mapping]] = ..., granted: _Optional[bool] = ...) -> None: ...

class Prepare(_message.Message):
    __slots__ = ("ballot", "from_slot")
    BALLOT_FIELD_NUMBER: _ClassVar[int]
    FROM_SLOT_FIELD_NUMBER: _ClassVar[int]
    ballot: Ballot
    from_slot: int
    def __init__(self, ballot: _Optional[_Union[Ballot, _Mapping]] = ..., from_slot: _Optional[int] = ...) -> None: ...

class Promise(_message.Message):
    __slots__ = ("ballot", "commit_index", "accepted")
    BALLOT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ballot: Ballot
    commit_index: int
    accepted: _containers.RepeatedCompositeFieldContainer[Entry]
    def __init__(self, ballot: _Optional[_Union[Ballot, _Mapping]] = ..., commit_index: _Optional[int] = ..., accepted: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ...) -> None: ...

class Accept(_message.Message):
    __slots__ = ("ballot", "slot", "value", "commit_index")
    BALLOT_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    ballot: Ballot
    slot: int
    value: Value
    commit_index: int
    def __init__(self, ballot: _Optional[_Union[Ballot, _Mapping]] = ..., slot: _Optional[int] = ..., value: _Optional[_Union[Value, _Mapping]] = ..., commit_index: _Optional[int] = ...) -> None: ...

class Accepted(_message.Message):
    __slots__ = ("ballot", "slot")
    BALLOT_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    ballot: Ballot
    slot: int
    def __init__(self, ballot: _Optional[_Union[Ballot, _Mapping]] = ..., slot: _Optional[int] = ...) -> None: ...

class Reject(_message.Message):
    __slots__ = ("promised", "slot")
    PROMISED_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    promised: Ballot
    slot: int
    def __init__(self, promised: _Optional[_Union[Ballot, _Mapping]] = ..., slot: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("ballot", "commit_index", "seq")
    BALLOT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ballot: Ballot
    commit_index: int
    seq: int
    def __init__(self, ballot: _Optional[_Union[Ballot, _Mapping]] = ..., commit_index: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("ballot", "seq", "commit_index")
    BALLOT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    ballot: Ballot
    seq: int
    commit_index: int
    def __init__(self, ballot: _Optional[_Union[Ballot, _Mapping]] = ..., seq: _Optional[int] = ..., commit_index: _Optional[int] = ...) -> None: ...

class CatchupRequest(_message.Message):
    __slots__ = ("from_slot",)
    FROM_SLOT_FIELD_NUMBER: _ClassVar[int]
    from_slot: int
    def __init__(self, from_slot: _Optional[int] = ...) -> None: ...

class CatchupReply(_message.Message):
    __slots__ = ("entries", "commit_index", "compacted", "first_slot")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    COMPACTED_FIELD_NUMBER: _ClassVar[int]
    FIRST_SLOT_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    commit_index: int
    compacted: int
    first_slot: int
    def __init__(self, entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., commit_index: _Optional[int] = ..., compacted: _Optional[int] = ..., first_slot: _Optional[int] = ...) -> None: ...

class PeerMessage(_message.Message):
    __slots__ = ("sender", "cluster_id", "receiver", "incarnation", "prepare", "promise", "accept", "accepted", "reject", "heartbeat", "heartbeat_ack", "catchup_request", "catchup_reply", "pre_vote", "pre_vote_reply", "packed", "max_cluster_version")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    PREPARE_FIELD_NUMBER: _ClassVar[int]
    PROMISE_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACK_FIELD_NUMBER: _ClassVar[int]
    CATCHUP_REQUEST_FIELD_NUMBER: _ClassVar[int]
    CATCHUP_REPLY_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_REPLY_FIELD_NUMBER: _ClassVar[int]
    PACKED_FIELD_NUMBER: _ClassVar[int]
    MAX_CLUSTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    sender: int
    cluster_id: int
    receiver: int
    incarnation: int
    prepare: Prepare
    promise: Promise
    accept: Accept
    accepted: Accepted
    reject: Reject
    heartbeat: Heartbeat
    heartbeat_ack: HeartbeatAck
    catchup_request: CatchupRequest
    catchup_reply: CatchupReply
    pre_vote: PreVote
    pre_vote_reply: PreVoteReply
    packed: _containers.RepeatedCompositeFieldContainer[PeerMessage]
    max_cluster_version: int
    def __init__(self, sender: _Optional[int] = ..., cluster_id: _Optional[int] = ..., receiver: _Optional[int] = ..., incarnation: _Optional[int] = ..., prepare: _Optional[_Union[Prepare, _Mapping]] = ..., promise: _Optional[_Union[Promise, _Mapping]] = ..., accept: _Optional[_Union[Accept, _Mapping]] = ..., accepted: _Optional[_Union[Accepted, _Mapping]] = ..., reject: _Optional[_Union[Reject, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., heartbeat_ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ..., catchup_request: _Optional[_Union[CatchupRequest, _Mapping]] = ..., catchup_reply: _Optional[_Union[CatchupReply, _Mapping]] = ..., pre_vote: _Optional[_Union[PreVote, _Mapping]] = ..., pre_vote_reply: _Optional[_Union[PreVoteReply, _Mapping]] = ..., packed: _Optional[_Iterable[_Union[PeerMessage, _Mapping]]] = ..., max_cluster_version: _Optional[int] = ...) -> None: ...

class StreamSummary(_message.Message):
    __slots__ = ("received",)
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    received: int
    def __init__(self, received: _Optional[int] = ...) -> None: ...

class Partition(_message.Message):
    __slots__ = ("blocked",)
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    blocked: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, blocked: _Optional[_Iterable[str]] = ...) -> None: ...

class PartitionAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("sender", "cluster_id", "receiver", "after")
    SENDER_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    sender: int
    cluster_id: int
    receiver: int
    after: int
    def __init__(self, sender: _Optional[int] = ..., cluster_id: _Optional[int] = ..., receiver: _Optional[int] = ..., after: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class IncarnationRequest(_message.Message):
    __slots__ = ("name", "member_id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    member_id: int
    def __init__(self, name: _Optional[str] = ..., member_id: _Optional[int] = ...) -> None: ...

class IncarnationReply(_message.Message):
    __slots__ = ("cluster_id", "fresh", "recorded")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FRESH_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    fresh: bool
    recorded: int
    def __init__(self, cluster_id: _Optional[int] = ..., fresh: _Optional[bool] = ..., recorded: _Optional[int] = ...) -> None: ...

class ConfigurationRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ConfigurationMember(_message.Message):
    __slots__ = ("id", "name", "address", "voter")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VOTER_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    address: str
    voter: bool
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., address: _Optional[str] = ..., voter: _Optional[bool] = ...) -> None: ...

class ConfigurationReply(_message.Message):
    __slots__ = ("cluster_id", "members", "leader", "name", "member_id", "membership", "max_cluster_version")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    MAX_CLUSTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    members: _containers.RepeatedCompositeFieldContainer[ConfigurationMember]
    leader: str
    name: str
    member_id: int
    membership: str
    max_cluster_version: int
    def __init__(self, cluster_id: _Optional[int] = ..., members: _Optional[_Iterable[_Union[ConfigurationMember, _Mapping]]] = ..., leader: _Optional[str] = ..., name: _Optional[str] = ..., member_id: _Optional[int] = ..., membership: _Optional[str] = ..., max_cluster_version: _Optional[int] = ...) -> None: ...
