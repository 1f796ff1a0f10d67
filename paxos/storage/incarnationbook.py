"""The durable incarnation book: the incarnation first heard from each member (paxos/incarnation.py)."""

from __future__ import annotations

import json
from pathlib import Path

from paxos import incarnation as incarnations
from paxos.common.files import write_atomically
from paxos.common.identity import format_id, parse_id
from paxos.consensus.messages import NodeId
from paxos.storage.datadir import DataDirError

INCARNATION_BOOK_FILE = "incarnations.json"  # in the data dir


def load_incarnation_book(data_dir: Path) -> dict[NodeId, int]:
    """The incarnation book this data dir recorded (paxos/incarnation.py); empty if none yet."""
    path = data_dir / INCARNATION_BOOK_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise DataDirError(f"{path} cannot be read ({exc})") from None
    try:
        book = {parse_id(member): int(text, 16) for member, text in raw["incarnations"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataDirError(f"{path} is damaged ({exc!r})") from None
    if not all(incarnations.valid(i) for i in book.values()):
        raise DataDirError(f"{path} is damaged (an incarnation out of range)")
    return book


def save_incarnation_book(data_dir: Path, book: dict[NodeId, int]) -> None:
    """Replace the durable incarnation book, atomically and fsynced."""
    body = {"incarnations": {format_id(m): format_id(i) for m, i in sorted(book.items())}}
    chunks = [(json.dumps(body, indent=1) + "\n").encode()]
    write_atomically(data_dir, INCARNATION_BOOK_FILE, chunks, writing="the incarnations heard from each member")
