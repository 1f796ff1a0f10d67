from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Consistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINEARIZABLE: _ClassVar[Consistency]
    LOCAL: _ClassVar[Consistency]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OK: _ClassVar[Status]
    NOT_LEADER: _ClassVar[Status]
    UNKNOWN: _ClassVar[Status]
    INVALID: _ClassVar[Status]
    UNAVAILABLE: _ClassVar[Status]
    SESSION_EXPIRED: _ClassVar[Status]
LINEARIZABLE: Consistency
LOCAL: Consistency
OK: Status
NOT_LEADER: Status
UNKNOWN: Status
INVALID: Status
UNAVAILABLE: Status
SESSION_EXPIRED: Status

class Command(_message.Message):
    __slots__ = ("client_id", "session_id", "seq", "first_unacked", "set", "delete", "iset")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FIRST_UNACKED_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    ISET_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    session_id: int
    seq: int
    first_unacked: int
    set: SetOp
    delete: DeleteOp
    iset: ImageSetOp
    def __init__(self, client_id: _Optional[str] = ..., session_id: _Optional[int] = ..., seq: _Optional[int] = ..., first_unacked: _Optional[int] = ..., set: _Optional[_Union[SetOp, _Mapping]] = ..., delete: _Optional[_Union[DeleteOp, _Mapping]] = ..., iset: _Optional[_Union[ImageSetOp, _Mapping]] = ...) -> None: ...

class SetOp(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class DeleteOp(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class ImageSetOp(_message.Message):
    __slots__ = ("hashes", "metadata")
    HASHES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    metadata: str
    def __init__(self, hashes: _Optional[_Iterable[bytes]] = ..., metadata: _Optional[str] = ...) -> None: ...

class WriteRequest(_message.Message):
    __slots__ = ("command",)
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    command: Command
    def __init__(self, command: _Optional[_Union[Command, _Mapping]] = ...) -> None: ...

class WriteReply(_message.Message):
    __slots__ = ("status", "removed", "leader_hint", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    LEADER_HINT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: Status
    removed: bool
    leader_hint: str
    error: str
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., removed: _Optional[bool] = ..., leader_hint: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("key", "consistency")
    KEY_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    key: str
    consistency: Consistency
    def __init__(self, key: _Optional[str] = ..., consistency: _Optional[_Union[Consistency, str]] = ...) -> None: ...

class GetReply(_message.Message):
    __slots__ = ("status", "found", "value", "leader_hint", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    LEADER_HINT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: Status
    found: bool
    value: str
    leader_hint: str
    error: str
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., found: _Optional[bool] = ..., value: _Optional[str] = ..., leader_hint: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class ImageGetRequest(_message.Message):
    __slots__ = ("hash", "max_distance", "limit", "consistency")
    HASH_FIELD_NUMBER: _ClassVar[int]
    MAX_DISTANCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    hash: bytes
    max_distance: int
    limit: int
    consistency: Consistency
    def __init__(self, hash: _Optional[bytes] = ..., max_distance: _Optional[int] = ..., limit: _Optional[int] = ..., consistency: _Optional[_Union[Consistency, str]] = ...) -> None: ...

class ImageMatch(_message.Message):
    __slots__ = ("hash", "distance", "metadata")
    HASH_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    hash: bytes
    distance: int
    metadata: str
    def __init__(self, hash: _Optional[bytes] = ..., distance: _Optional[int] = ..., metadata: _Optional[str] = ...) -> None: ...

class ImageGetReply(_message.Message):
    __slots__ = ("status", "matches", "leader_hint", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    LEADER_HINT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: Status
    matches: _containers.RepeatedCompositeFieldContainer[ImageMatch]
    leader_hint: str
    error: str
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., matches: _Optional[_Iterable[_Union[ImageMatch, _Mapping]]] = ..., leader_hint: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("status", "session_id", "leader_hint", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LEADER_HINT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: Status
    session_id: int
    leader_hint: str
    error: str
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., session_id: _Optional[int] = ..., leader_hint: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("name", "address", "role", "leader", "ballot", "commit_index", "applied_index", "version", "uptime_seconds", "log_bytes", "data_bytes", "last_fsync_seconds", "snapshot_index", "membership", "member_id", "cluster_id", "cluster_version", "max_cluster_version", "data_format")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    BALLOT_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LOG_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_FSYNC_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_INDEX_FIELD_NUMBER: _ClassVar[int]
    MEMBERSHIP_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MAX_CLUSTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_FORMAT_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    role: str
    leader: str
    ballot: str
    commit_index: int
    applied_index: int
    version: str
    uptime_seconds: float
    log_bytes: int
    data_bytes: int
    last_fsync_seconds: float
    snapshot_index: int
    membership: str
    member_id: int
    cluster_id: int
    cluster_version: int
    max_cluster_version: int
    data_format: int
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., role: _Optional[str] = ..., leader: _Optional[str] = ..., ballot: _Optional[str] = ..., commit_index: _Optional[int] = ..., applied_index: _Optional[int] = ..., version: _Optional[str] = ..., uptime_seconds: _Optional[float] = ..., log_bytes: _Optional[int] = ..., data_bytes: _Optional[int] = ..., last_fsync_seconds: _Optional[float] = ..., snapshot_index: _Optional[int] = ..., membership: _Optional[str] = ..., member_id: _Optional[int] = ..., cluster_id: _Optional[int] = ..., cluster_version: _Optional[int] = ..., max_cluster_version: _Optional[int] = ..., data_format: _Optional[int] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MemberInfo(_message.Message):
    __slots__ = ("name", "address", "voter", "leader", "applied_index", "id")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    VOTER_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    voter: bool
    leader: bool
    applied_index: int
    id: int
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., voter: _Optional[bool] = ..., leader: _Optional[bool] = ..., applied_index: _Optional[int] = ..., id: _Optional[int] = ...) -> None: ...

class MembersReply(_message.Message):
    __slots__ = ("status", "leader_hint", "members", "cluster_id", "commit_index", "change_in_progress")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LEADER_HINT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    COMMIT_INDEX_FIELD_NUMBER: _ClassVar[int]
    CHANGE_IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    status: Status
    leader_hint: str
    members: _containers.RepeatedCompositeFieldContainer[MemberInfo]
    cluster_id: int
    commit_index: int
    change_in_progress: bool
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., leader_hint: _Optional[str] = ..., members: _Optional[_Iterable[_Union[MemberInfo, _Mapping]]] = ..., cluster_id: _Optional[int] = ..., commit_index: _Optional[int] = ..., change_in_progress: _Optional[bool] = ...) -> None: ...

class ChangeMembersRequest(_message.Message):
    __slots__ = ("add", "promote", "remove")
    ADD_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    add: MemberInfo
    promote: str
    remove: str
    def __init__(self, add: _Optional[_Union[MemberInfo, _Mapping]] = ..., promote: _Optional[str] = ..., remove: _Optional[str] = ...) -> None: ...

class ChangeMembersReply(_message.Message):
    __slots__ = ("status", "error", "leader_hint", "members")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    LEADER_HINT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    status: Status
    error: str
    leader_hint: str
    members: _containers.RepeatedCompositeFieldContainer[MemberInfo]
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., error: _Optional[str] = ..., leader_hint: _Optional[str] = ..., members: _Optional[_Iterable[_Union[MemberInfo, _Mapping]]] = ...) -> None: ...

class BackupRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BackupChunk(_message.Message):
    __slots__ = ("status", "leader_hint", "error", "applied_index", "estimated_bytes", "data")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LEADER_HINT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    status: Status
    leader_hint: str
    error: str
    applied_index: int
    estimated_bytes: int
    data: bytes
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., leader_hint: _Optional[str] = ..., error: _Optional[str] = ..., applied_index: _Optional[int] = ..., estimated_bytes: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("id", "timeout_ms", "write", "get", "iget", "status", "register")
    ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    WRITE_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    IGET_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    id: int
    timeout_ms: int
    write: WriteRequest
    get: GetRequest
    iget: ImageGetRequest
    status: StatusRequest
    register: RegisterRequest
    def __init__(self, id: _Optional[int] = ..., timeout_ms: _Optional[int] = ..., write: _Optional[_Union[WriteRequest, _Mapping]] = ..., get: _Optional[_Union[GetRequest, _Mapping]] = ..., iget: _Optional[_Union[ImageGetRequest, _Mapping]] = ..., status: _Optional[_Union[StatusRequest, _Mapping]] = ..., register: _Optional[_Union[RegisterRequest, _Mapping]] = ...) -> None: ...

class SessionBatch(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[SessionRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[SessionRequest, _Mapping]]] = ...) -> None: ...

class SessionRefusal(_message.Message):
    __slots__ = ("status", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: Status
    error: str
    def __init__(self, status: _Optional[_Union[Status, str]] = ..., error: _Optional[str] = ...) -> None: ...

class SessionReply(_message.Message):
    __slots__ = ("id", "write", "get", "iget", "status", "refused", "register")
    ID_FIELD_NUMBER: _ClassVar[int]
    WRITE_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    IGET_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    REGISTER_FIELD_NUMBER: _ClassVar[int]
    id: int
    write: WriteReply
    get: GetReply
    iget: ImageGetReply
    status: NodeStatus
    refused: SessionRefusal
    register: RegisterReply
    def __init__(self, id: _Optional[int] = ..., write: _Optional[_Union[WriteReply, _Mapping]] = ..., get: _Optional[_Union[GetReply, _Mapping]] = ..., iget: _Optional[_Union[ImageGetReply, _Mapping]] = ..., status: _Optional[_Union[NodeStatus, _Mapping]] = ..., refused: _Optional[_Union[SessionRefusal, _Mapping]] = ..., register: _Optional[_Union[RegisterReply, _Mapping]] = ...) -> None: ...

class SessionReplies(_message.Message):
    __slots__ = ("replies",)
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    replies: _containers.RepeatedCompositeFieldContainer[SessionReply]
    def __init__(self, replies: _Optional[_Iterable[_Union[SessionReply, _Mapping]]] = ...) -> None: ...
