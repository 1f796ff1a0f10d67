from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WriteOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WRITE_OUTCOME_UNSPECIFIED: _ClassVar[WriteOutcome]
    APPLIED: _ClassVar[WriteOutcome]
    REFUSED: _ClassVar[WriteOutcome]
    UNKNOWN: _ClassVar[WriteOutcome]
WRITE_OUTCOME_UNSPECIFIED: WriteOutcome
APPLIED: WriteOutcome
REFUSED: WriteOutcome
UNKNOWN: WriteOutcome

class SnapshotMember(_message.Message):
    __slots__ = ("id", "name", "address", "learner")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    LEARNER_FIELD_NUMBER: _ClassVar[int]
    id: int
    name: str
    address: str
    learner: bool
    def __init__(self, id: _Optional[int] = ..., name: _Optional[str] = ..., address: _Optional[str] = ..., learner: _Optional[bool] = ...) -> None: ...

class SnapshotHeader(_message.Message):
    __slots__ = ("applied_index", "cluster_id", "members", "unreadable_commands", "next_image_ref", "next_session_id", "cluster_version")
    APPLIED_INDEX_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    UNREADABLE_COMMANDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_IMAGE_REF_FIELD_NUMBER: _ClassVar[int]
    NEXT_SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    applied_index: int
    cluster_id: int
    members: _containers.RepeatedCompositeFieldContainer[SnapshotMember]
    unreadable_commands: int
    next_image_ref: int
    next_session_id: int
    cluster_version: int
    def __init__(self, applied_index: _Optional[int] = ..., cluster_id: _Optional[int] = ..., members: _Optional[_Iterable[_Union[SnapshotMember, _Mapping]]] = ..., unreadable_commands: _Optional[int] = ..., next_image_ref: _Optional[int] = ..., next_session_id: _Optional[int] = ..., cluster_version: _Optional[int] = ...) -> None: ...

class KeyValue(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class KeyValues(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[KeyValue]
    def __init__(self, entries: _Optional[_Iterable[_Union[KeyValue, _Mapping]]] = ...) -> None: ...

class SessionResult(_message.Message):
    __slots__ = ("seq", "outcome", "removed", "error")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    seq: int
    outcome: WriteOutcome
    removed: bool
    error: str
    def __init__(self, seq: _Optional[int] = ..., outcome: _Optional[_Union[WriteOutcome, str]] = ..., removed: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class ClientSession(_message.Message):
    __slots__ = ("client_id", "session_id", "first_unacked", "results")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_UNACKED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    session_id: int
    first_unacked: int
    results: _containers.RepeatedCompositeFieldContainer[SessionResult]
    def __init__(self, client_id: _Optional[str] = ..., session_id: _Optional[int] = ..., first_unacked: _Optional[int] = ..., results: _Optional[_Iterable[_Union[SessionResult, _Mapping]]] = ...) -> None: ...

class ClientSessions(_message.Message):
    __slots__ = ("sessions",)
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[ClientSession]
    def __init__(self, sessions: _Optional[_Iterable[_Union[ClientSession, _Mapping]]] = ...) -> None: ...

class StoredImage(_message.Message):
    __slots__ = ("ref", "name_hash", "metadata", "hashes")
    REF_FIELD_NUMBER: _ClassVar[int]
    NAME_HASH_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    HASHES_FIELD_NUMBER: _ClassVar[int]
    ref: int
    name_hash: bytes
    metadata: str
    hashes: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, ref: _Optional[int] = ..., name_hash: _Optional[bytes] = ..., metadata: _Optional[str] = ..., hashes: _Optional[_Iterable[bytes]] = ...) -> None: ...

class StoredImages(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[StoredImage]
    def __init__(self, images: _Optional[_Iterable[_Union[StoredImage, _Mapping]]] = ...) -> None: ...

class SnapshotEnd(_message.Message):
    __slots__ = ("frames",)
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    frames: int
    def __init__(self, frames: _Optional[int] = ...) -> None: ...

class SnapshotPart(_message.Message):
    __slots__ = ("header", "key_values", "sessions", "images", "end")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    KEY_VALUES_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    header: SnapshotHeader
    key_values: KeyValues
    sessions: ClientSessions
    images: StoredImages
    end: SnapshotEnd
    def __init__(self, header: _Optional[_Union[SnapshotHeader, _Mapping]] = ..., key_values: _Optional[_Union[KeyValues, _Mapping]] = ..., sessions: _Optional[_Union[ClientSessions, _Mapping]] = ..., images: _Optional[_Union[StoredImages, _Mapping]] = ..., end: _Optional[_Union[SnapshotEnd, _Mapping]] = ...) -> None: ...
