"""The checks of a request before it is sent: a request that fails one is never sent.

A key, value or metadata that is not text is the caller's mistake, a
``TypeError``; one that is text but out of bounds, like a server name or
address that could not be dialled, is an ``InvalidRequest``, the error the
servers would answer it with.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from client.errors import InvalidRequest
from paxos.common.hostfile import HostfileError, Member, parse_hostfile_text
from paxos.common.limits import MAX_IMAGE_MATCHES, MAX_KEY_BYTES, MAX_METADATA_BYTES
from protos import kv_pb2

if TYPE_CHECKING:
    # client.images pulls in numpy, scipy and imagehash (a third of a second): only the image
    # calls import it, so that every other command starts quickly.
    from client.images import ImageSource

__all__ = [
    "backup_target",
    "check_key",
    "check_metadata",
    "check_server",
    "check_value",
    "consistency_level",
    "image_query",
]


def check_key(key: str) -> None:
    _check_text("key", key)
    size = len(key.encode("utf-8", "surrogatepass"))
    if not 0 < size <= MAX_KEY_BYTES:
        raise InvalidRequest(f"key must be 1 to {MAX_KEY_BYTES} bytes of UTF-8, got {size}")


def check_value(value: str, max_value_bytes: int) -> None:
    _check_text("value", value)
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > max_value_bytes:
        raise InvalidRequest(f"value is {size} bytes; the limit is {max_value_bytes}")


def check_metadata(metadata: str) -> None:
    _check_text("metadata", metadata)
    size = len(metadata.encode("utf-8", "surrogatepass"))
    if size > MAX_METADATA_BYTES:
        raise InvalidRequest(f"metadata is {size} bytes; the limit is {MAX_METADATA_BYTES}")


def consistency_level(name: str) -> kv_pb2.Consistency:
    """The request's consistency for its name; a ``ValueError`` for any other name."""
    if name not in ("linearizable", "local"):
        raise ValueError("consistency must be 'linearizable' or 'local'")
    return kv_pb2.LOCAL if name == "local" else kv_pb2.LINEARIZABLE


def image_query(image: ImageSource, limit: int, max_distance: int | None, consistency: str) -> kv_pb2.ImageGetRequest:
    """The checked request for ``inearest``; hashing the photo takes a while."""
    from client import images

    distance = images.HASH_BITS if max_distance is None else max_distance
    if not 0 <= distance <= images.HASH_BITS:
        raise InvalidRequest(f"max_distance must be 0 to {images.HASH_BITS} bits")
    if not 1 <= limit <= MAX_IMAGE_MATCHES:
        raise InvalidRequest(f"limit must be 1 to {MAX_IMAGE_MATCHES}")
    return kv_pb2.ImageGetRequest(
        hash=images.hash_image(image), max_distance=distance, limit=limit, consistency=consistency_level(consistency)
    )


def check_server(name: str, address: str) -> Member:
    """A server's name and ``host:port`` checked as a hostfile line is; ``InvalidRequest`` if they are not valid."""
    for what, text in (("server name", name), ("address (HOST:PORT)", address)):
        if not text or "#" in text or any(c.isspace() for c in text):
            raise InvalidRequest(f"{text!r} is not a valid {what}")
    try:
        (server,) = parse_hostfile_text(f"{name} {address}", "member")
    except (HostfileError, ValueError) as exc:
        raise InvalidRequest(str(exc).removeprefix("member:1: ")) from None
    return server


def backup_target(path: str | Path) -> Path:
    """Where a backup is to be written: a file name in a directory that exists."""
    target = Path(path)
    if target.is_dir():
        raise InvalidRequest(f"{target} is a directory; name the backup file")
    if not target.parent.is_dir():
        raise InvalidRequest(f"{target.parent} does not exist")
    return target


def _check_text(what: str, text: object) -> None:
    """Keys, values and metadata are text: anything else is the caller's mistake, a TypeError."""
    if not isinstance(text, str):
        hint = "; decode bytes first, e.g. data.decode('utf-8')" if isinstance(text, bytes | bytearray) else ""
        raise TypeError(f"{what} must be str, not {type(text).__name__}{hint}")
