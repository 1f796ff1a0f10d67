from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LogCommand(_message.Message):
    __slots__ = ("client_write", "configuration", "register_session", "raise_cluster_version")
    CLIENT_WRITE_FIELD_NUMBER: _ClassVar[int]
    CONFIGURATION_FIELD_NUMBER: _ClassVar[int]
    REGISTER_SESSION_FIELD_NUMBER: _ClassVar[int]
    RAISE_CLUSTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    client_write: ClientWrite
    configuration: Configuration
    register_session: RegisterSession
    raise_cluster_version: RaiseClusterVersion
    def __init__(self, client_write: _Optional[_Union[ClientWrite, _Mapping]] = ..., configuration: _Optional[_Union[Configuration, _Mapping]] = ..., register_session: _Optional[_Union[RegisterSession, _Mapping]] = ..., raise_cluster_version: _Optional[_Union[RaiseClusterVersion, _Mapping]] = ...) -> None: ...

class RaiseClusterVersion(_message.Message):
    __slots__ = ("version", "proposer")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROPOSER_FIELD_NUMBER: _ClassVar[int]
    version: int
    proposer: int
    def __init__(self, version: _Optional[int] = ..., proposer: _Optional[int] = ...) -> None: ...

class RegisterSession(_message.Message):
    __slots__ = ("proposer", "nonce")
    PROPOSER_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    proposer: int
    nonce: int
    def __init__(self, proposer: _Optional[int] = ..., nonce: _Optional[int] = ...) -> None: ...

class Configuration(_message.Message):
    __slots__ = ("members",)
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[ConfigMember]
    def __init__(self, members: _Optional[_Iterable[_Union[ConfigMember, _Mapping]]] = ...) -> None: ...

class ConfigMember(_message.Message):
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

class ClientWrite(_message.Message):
    __slots__ = ("client_id", "session_id", "session_required", "seq", "first_unacked", "set", "delete", "iset")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    FIRST_UNACKED_FIELD_NUMBER: _ClassVar[int]
    SET_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    ISET_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    session_id: int
    session_required: bool
    seq: int
    first_unacked: int
    set: SetOp
    delete: DeleteOp
    iset: ImageSetOp
    def __init__(self, client_id: _Optional[str] = ..., session_id: _Optional[int] = ..., session_required: _Optional[bool] = ..., seq: _Optional[int] = ..., first_unacked: _Optional[int] = ..., set: _Optional[_Union[SetOp, _Mapping]] = ..., delete: _Optional[_Union[DeleteOp, _Mapping]] = ..., iset: _Optional[_Union[ImageSetOp, _Mapping]] = ...) -> None: ...

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
