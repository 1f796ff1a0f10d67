"""Measurements that produce the numbers quoted in docs/.

Each benchmark prints Markdown; with `--write docs/FILE.md` it also replaces
its own generated section of that document, between the markers
`<!-- NAME:begin -->` and `<!-- NAME:end -->`, leaving the prose around it.
"""

from __future__ import annotations

from pathlib import Path


def replace_doc_section(path: Path, name: str, body: str) -> None:
    """Replace the text between NAME's begin/end markers in the file at `path`."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text(encoding="utf-8")
    head, sep_begin, rest = text.partition(begin)
    _, sep_end, tail = rest.partition(end)
    if not sep_begin or not sep_end:
        raise SystemExit(f"{path}: markers {begin} and {end} not found; add them first")
    path.write_text(f"{head}{begin}\n{body.strip()}\n{end}{tail}", encoding="utf-8")
