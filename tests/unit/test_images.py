"""Image keys (client/images.py) and the hash index (paxos/kv/image_index.py)."""

from __future__ import annotations

import io
import itertools
import math
import random
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageOps

from benchmarks.image_hash_eval import EDITS
from client import images
from client.images import DEFAULT_MAX_DISTANCE, HASH_BYTES, ImageError, distance, hash_image, index_hashes
from paxos.common.limits import MAX_IMAGE_HASHES
from paxos.kv.image_index import ImageIndex, chunk_radii, split_bits

DATA = Path(skimage.data.data_dir)
EDITED_PHOTOS = ("astronaut.png", "camera.png")
# The stereo pair is the hardest distractor in the corpus: two photos of one
# scene from viewpoints a few centimetres apart.
DISTRACTORS = (
    "astronaut.png",
    "camera.png",
    "coffee.png",
    "chelsea.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
)


def _stored_distance(query: bytes, stored: list[bytes]) -> int:
    return min(distance(query, h) for h in stored)


@pytest.fixture(scope="module")
def stored() -> dict[str, list[bytes]]:
    return {name: index_hashes(DATA / name) for name in set(EDITED_PHOTOS) | set(DISTRACTORS)}


# ---- hashing -------------------------------------------------------------


def test_same_file_hashes_identically_from_path_and_bytes() -> None:
    path = DATA / "coffee.png"
    h = hash_image(path)
    assert len(h) == HASH_BYTES
    assert hash_image(str(path)) == h
    assert hash_image(path.read_bytes()) == h
    assert distance(h, hash_image(path)) == 0
    assert images.hash_hex(h) == h.hex() and len(images.hash_hex(h)) == 2 * HASH_BYTES
    assert index_hashes(path)[0] == h
    assert len(index_hashes(path)) == images.VARIANT_COUNT <= MAX_IMAGE_HASHES


@pytest.mark.parametrize("photo", EDITED_PHOTOS)
@pytest.mark.parametrize("edit", list(EDITS))
def test_each_edit_is_found(stored: dict[str, list[bytes]], photo: str, edit: str) -> None:
    original = Image.open(DATA / photo).convert("RGB")
    query = hash_image(EDITS[edit](original))
    own = _stored_distance(query, stored[photo])
    assert own <= DEFAULT_MAX_DISTANCE
    others = [_stored_distance(query, keys) for name, keys in stored.items() if name != photo]
    assert own < min(others)


@pytest.mark.parametrize(("a", "b"), list(itertools.permutations(DISTRACTORS, 2)))
def test_other_photos_do_not_match(stored: dict[str, list[bytes]], a: str, b: str) -> None:
    assert not images.matches(stored[a][0], stored[b][0])
    assert _stored_distance(stored[a][0], stored[b]) > DEFAULT_MAX_DISTANCE


# Edits written here independently of client/images.py, so that the test
# does not share a mistake with the variants it checks.
def _mirrored(img: Image.Image) -> bytes:
    return _encode(ImageOps.mirror(img), "PNG")


def _cropped_12_percent(img: Image.Image) -> bytes:
    dx, dy = round(img.width * 0.12), round(img.height * 0.12)
    return _encode(img.crop((dx, dy, img.width - dx, img.height - dy)), "PNG")


def _rotated_5_degrees(img: Image.Image) -> bytes:
    """Rotated clockwise and cropped to the upright rectangle it covers."""
    rotated = img.rotate(-5, Image.Resampling.BILINEAR)
    t = math.radians(5)
    aspect = max(img.size) / min(img.size)
    scale = 1 / (math.cos(t) + math.sin(t) * aspect)  # the largest same-shape rectangle inside
    dx, dy = round(img.width * (1 - scale) / 2) + 1, round(img.height * (1 - scale) / 2) + 1
    return _encode(rotated.crop((dx, dy, img.width - dx, img.height - dy)), "JPEG", quality=85)


GEOMETRIC_EDITS = {"mirror": _mirrored, "crop 12%": _cropped_12_percent, "rotate -5 degrees": _rotated_5_degrees}


@pytest.mark.parametrize("photo", EDITED_PHOTOS)
@pytest.mark.parametrize("edit", list(GEOMETRIC_EDITS))
def test_mirrored_cropped_and_rotated_copies_are_found(stored: dict[str, list[bytes]], photo: str, edit: str) -> None:
    query = hash_image(GEOMETRIC_EDITS[edit](Image.open(DATA / photo).convert("RGB")))
    own = _stored_distance(query, stored[photo])
    assert own <= DEFAULT_MAX_DISTANCE
    assert own < min(_stored_distance(query, keys) for name, keys in stored.items() if name != photo)


@pytest.mark.parametrize(("a", "b"), list(itertools.permutations(DISTRACTORS, 2)))
def test_edited_copies_of_other_photos_do_not_match(stored: dict[str, list[bytes]], a: str, b: str) -> None:
    original = Image.open(DATA / a).convert("RGB")
    for edit in GEOMETRIC_EDITS.values():
        assert _stored_distance(hash_image(edit(original)), stored[b]) > DEFAULT_MAX_DISTANCE


def test_exif_orientation_is_applied() -> None:
    upright = Image.open(DATA / "chelsea.png").convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the viewer must rotate 90 degrees clockwise
    out = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(out, "JPEG", quality=95, exif=exif)
    assert matches_closely(hash_image(out.getvalue()), hash_image(DATA / "chelsea.png"))


def matches_closely(a: bytes, b: bytes) -> bool:
    return distance(a, b) <= DEFAULT_MAX_DISTANCE // 4


def test_transparent_and_16_bit_images_hash() -> None:
    rgba = Image.open(DATA / "coffee.png").convert("RGBA")
    assert matches_closely(hash_image(_encode(rgba, "PNG")), hash_image(DATA / "coffee.png"))
    gray = Image.open(DATA / "camera.png")
    wide = Image.fromarray(np.asarray(gray).astype(np.uint16) * 257)
    assert matches_closely(hash_image(_encode(wide, "PNG")), hash_image(DATA / "camera.png"))


def test_distance_rejects_keys_of_different_length() -> None:
    with pytest.raises(ValueError, match="cannot compare"):
        distance(b"\0" * HASH_BYTES, b"\0" * (HASH_BYTES - 1))


# ---- bad input -----------------------------------------------------------


def _encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **params)
    return out.getvalue()


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _assert_error(source: object, pattern: str) -> None:
    with pytest.raises(ImageError, match=pattern) as caught:
        hash_image(source)  # type: ignore[arg-type]
    message = str(caught.value)
    assert "\n" not in message
    # Each kind of failure has its own message, not a generic one.
    assert ("corrupt" in message) == ("corrupt" in pattern)


def test_missing_path(tmp_path: Path) -> None:
    _assert_error(tmp_path / "nope.jpg", r"nope\.jpg'?: no such file")


def test_directory(tmp_path: Path) -> None:
    _assert_error(tmp_path, "is a directory")


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a photo\n")
    _assert_error(path, r"notes\.txt' is not an image \(expected JPEG")


def test_empty_input(tmp_path: Path) -> None:
    _assert_error(b"", "image data is empty")
    (tmp_path / "empty.jpg").write_bytes(b"")
    _assert_error(tmp_path / "empty.jpg", "empty")


def test_truncated_jpeg() -> None:
    data = (DATA / "rocket.jpg").read_bytes()
    _assert_error(data[: len(data) // 2], "truncated or corrupt")


def test_corrupt_png() -> None:
    data = bytearray((DATA / "camera.png").read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    _assert_error(bytes(data), "truncated or corrupt")


def test_unsupported_formats() -> None:
    ico = _encode(Image.new("RGB", (16, 16)), "ICO")
    _assert_error(ico, "is in ICO format, which is not supported; convert it to JPEG")
    heic = b"\0\0\0\x18ftypheic" + b"\0" * 64
    _assert_error(heic, "in HEIC format, which is not supported")


def test_decompression_bomb_header() -> None:
    _assert_error(_png_header(100_000, 100_000), "decompression bomb")


@pytest.mark.parametrize("limit", [30_000, 100])  # Pillow warns above 1x the limit, fails above 2x
def test_decompression_bomb_limit_is_respected(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    small = _encode(Image.new("RGB", (200, 200)), "PNG")  # 40,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    _assert_error(small, "decompression bomb")


def _jpeg_claiming(width: int, height: int) -> bytes:
    """A small valid JPEG whose frame header is rewritten to claim width x height."""
    data = bytearray(_encode(Image.new("RGB", (16, 16), "gray"), "JPEG"))
    sof = data.index(b"\xff\xc0")  # marker, length (2), precision (1), height (2), width (2)
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize(("width", "height"), [(9000, 9000), (65_000, 65_000)])
def test_small_jpeg_claiming_huge_dimensions_is_refused(width: int, height: int) -> None:
    # 9000x9000 is below Pillow's limit: without a check of its own the
    # hasher would allocate the full frame before finding the data missing.
    _assert_error(_jpeg_claiming(width, height), "decompression bomb")


def test_file_too_large(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 100)
    _assert_error(DATA / "camera.png", "larger than 100 bytes")


def test_wrong_type() -> None:
    with pytest.raises(TypeError):
        hash_image(42)  # type: ignore[arg-type]


# ---- index ---------------------------------------------------------------


def _brute_force(entries: dict[bytes, int], query: bytes, max_distance: int, limit: int) -> list[tuple[int, int]]:
    """(distance, ref) of the best hash per ref, by scanning every hash."""
    q = int.from_bytes(query, "big")
    best: dict[int, tuple[int, bytes]] = {}
    for h, ref in entries.items():
        d = (int.from_bytes(h, "big") ^ q).bit_count()
        if d <= max_distance and (ref not in best or (d, h) < best[ref]):
            best[ref] = (d, h)
    ranked = sorted(best.items(), key=lambda item: (item[1][0], -item[0], item[1][1]))
    return [(d, ref) for ref, (d, _) in ranked[:limit]]


def _flip(rng: random.Random, h: bytes, bits: int) -> bytes:
    value = int.from_bytes(h, "big")
    for position in rng.sample(range(8 * len(h)), bits):
        value ^= 1 << position
    return value.to_bytes(len(h), "big")


def test_index_matches_brute_force_on_random_data() -> None:
    rng = random.Random(7)
    index, entries = ImageIndex(HASH_BYTES), {}
    for ref in range(3_000):
        base = rng.randbytes(HASH_BYTES)
        # Some refs get near variants, as an image with its crop variants does.
        variants = [base] + [_flip(rng, base, rng.randint(1, 30)) for _ in range(ref % 3)]
        for h in variants:
            index.add(h, ref)
            entries[h] = ref
    stored = list(entries)
    for _ in range(30):
        query = _flip(rng, rng.choice(stored), rng.randint(0, 70))
        for max_distance, limit in [(0, 1), (DEFAULT_MAX_DISTANCE, 1), (DEFAULT_MAX_DISTANCE, 5), (80, 3)]:
            got = [(d, ref) for d, _, ref in index.nearest(query, max_distance, limit)]
            assert got == _brute_force(entries, query, max_distance, limit)


def test_index_still_exact_after_chunks_widen() -> None:
    rng = random.Random(11)
    index, entries = ImageIndex(4), {}
    for ref in range(70_000):  # crosses 2**16 hashes, where chunks widen
        h = rng.randbytes(4)
        index.add(h, ref)
        entries[h] = ref
    assert index.chunk_bits > 16
    for _ in range(10):
        query = rng.randbytes(4)
        assert [(d, r) for d, _, r in index.nearest(query, 4, 10)] == _brute_force(entries, query, 4, 10)


def test_starting_chunk_width_avoids_rebuilds_and_gives_same_answers() -> None:
    rng = random.Random(5)
    adds = [(rng.randbytes(8), ref) for ref in range(2_000)]
    narrow, wide = ImageIndex(8), ImageIndex(8, chunk_bits=21)
    for h, ref in adds:
        narrow.add(h, ref)
        wide.add(h, ref)
    assert (narrow.chunk_bits, wide.chunk_bits) == (16, 21)
    for _ in range(20):
        query = rng.randbytes(8)
        assert narrow.nearest(query, 20, limit=3) == wide.nearest(query, 20, limit=3)


def test_tie_goes_to_most_recent_and_readd_updates_ref() -> None:
    index = ImageIndex(2)
    index.add(b"\x00\x01", 1)
    index.add(b"\x00\x02", 2)  # both one bit from the query
    assert [ref for _, _, ref in index.nearest(b"\x00\x00", 1, limit=2)] == [2, 1]
    index.add(b"\x00\x01", 3)  # the same hash stored again, later
    assert index.nearest(b"\x00\x00", 1) == [(1, b"\x00\x01", 3)]
    assert index.ref_of(b"\x00\x01") == 3 and len(index) == 2


def test_nearest_orders_by_distance_then_recency_and_reports_each_ref_once() -> None:
    index = ImageIndex(2)
    index.add(b"\x00\x00", 1)
    index.add(b"\x00\x03", 5)  # distance 2, most recent
    index.add(b"\x00\x07", 5)  # same ref, further away: not reported twice
    index.add(b"\xff\xff", 9)  # beyond the threshold
    assert index.nearest(b"\x00\x00", 3, limit=10) == [(0, b"\x00\x00", 1), (2, b"\x00\x03", 5)]


def test_remove() -> None:
    index = ImageIndex(2)
    index.add(b"\x12\x34", 1)
    assert index.remove(b"\x12\x34") and not index.remove(b"\x12\x34")
    assert index.nearest(b"\x12\x34", 16) == [] and b"\x12\x34" not in index


def test_index_is_deterministic_regardless_of_insertion_order() -> None:
    rng = random.Random(3)
    adds = [(rng.randbytes(8), ref) for ref in range(500)]
    queries = [rng.randbytes(8) for _ in range(50)]
    a, b = ImageIndex(8), ImageIndex(8)
    for h, ref in adds:
        a.add(h, ref)
    for h, ref in reversed(adds):
        b.add(h, ref)
    for q in queries:
        assert a.nearest(q, 24, limit=5) == b.nearest(q, 24, limit=5)
    assert a.items() == b.items()


def test_index_rejects_bad_arguments() -> None:
    index = ImageIndex(HASH_BYTES)
    with pytest.raises(ValueError, match=f"{HASH_BYTES}-byte hash"):
        index.add(b"short", 1)
    with pytest.raises(ValueError, match="max_distance"):
        index.nearest(b"\0" * HASH_BYTES, -1)
    with pytest.raises(ValueError, match="limit"):
        index.nearest(b"\0" * HASH_BYTES, 1, limit=0)


@pytest.mark.parametrize("bits", [8, 20, 288])
def test_chunk_radii_cover_every_split_of_the_distance(bits: int) -> None:
    # Pigeonhole: a distance d spread over m chunks can avoid every chunk's
    # radius only if sum(radius + 1) <= d; the radii must make that impossible.
    for chunk_bits in (4, 16, 18):
        chunks = len(split_bits(bits, chunk_bits))
        for d in range(bits + 1):
            assert sum(r + 1 for r in chunk_radii(chunks, d)) > d


def test_server_and_client_agree_on_hash_size() -> None:
    from client import images
    from paxos.common import limits

    assert limits.IMAGE_HASH_BYTES == images.HASH_BYTES
    assert limits.MAX_IMAGE_HASHES >= images.VARIANT_COUNT == len(images.index_hashes(DATA / "coffee.png"))
