"""Perceptual image keys for `iset` / `iget`.

`iget` must find a photo's metadata again from a copy that was resized,
recompressed or lightly edited, and must never answer with another photo's
metadata. The client therefore sends a *perceptual* hash instead of the file
bytes, and the server answers with the nearest stored hash within a Hamming
distance threshold.

The key (chosen by `python -m benchmarks.image_hash_eval`, see docs/images.md):

* the image is decoded (a JPEG at the smallest of 1/2, 1/4 or 1/8 scale that
  is still at least `WORK_SIDE` pixels each way, in grayscale: the hash only
  reads luminance), turned upright (EXIF orientation), flattened onto white
  if it has transparency and shrunk to fit `WORK_SIDE` pixels, so the key
  does not depend on the file's resolution or encoding;
* the key is the concatenation of two difference hashes on a 12x12 grid,
  horizontal gradients then vertical gradients: `HASH_BITS` = 288 bits,
  `HASH_BYTES` = 36 bytes;
* `distance` is the Hamming distance over all 288 bits (the sum of the two
  parts' distances); a single threshold applies, `DEFAULT_MAX_DISTANCE`.

Cropping, rotating and mirroring move every gradient, so a plain perceptual
hash loses such copies first. `index_hashes` returns, besides the full-frame
key, the keys of the mirror image, of the image with its border cut by each
of `CROP_VARIANTS` and of the image straightened by each of
`ROTATION_VARIANTS` (`variant_images`); `iset` stores all of them under one
reference and `iget` looks up the single `hash_image` key. The crop and
rotation amounts are deliberately not the ones the measurement tests (2, 5,
12 and 15% crops, 5 degrees), and held-out crops and rotations are measured
separately.
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings

import imagehash
import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from paxos.common.limits import MAX_IMAGE_HASHES, MAX_JPEG_PIXELS, MAX_JPEG_PIXELS_PER_BYTE

ImageSource = str | os.PathLike[str] | bytes | bytearray

# Decoded images are shrunk to fit this square before hashing: hashing reads a
# 13x12 grid, so more pixels only cost time, and a fixed working size makes a
# 50% downscale and the original go through the same resampling.
WORK_SIDE = 256
# Grid size of each difference hash: 12x12 = 144 bits per direction.
DHASH_GRID = 12
HASH_BITS = 2 * DHASH_GRID * DHASH_GRID
HASH_BYTES = HASH_BITS // 8
# Chosen in docs/images.md: every edited copy in the study lies within 44 bits
# of its stored photo, the nearest other photo 68 bits away; the threshold sits
# nearer the edits because a false match is worse than a miss.
DEFAULT_MAX_DISTANCE = 48
# Border fractions (cut from every edge) stored in addition to the full frame:
# 3.5% apart, so every crop from 1% to 15% lies near one (docs/images.md).
CROP_VARIANTS: tuple[float, ...] = (0.035, 0.07, 0.105, 0.14)
# Rotations (degrees, counter-clockwise, cropped upright as photo editors'
# straighten tools do) stored in addition: covers about 2 to 5 degrees either way.
ROTATION_VARIANTS: tuple[float, ...] = (4.0, -4.0)
# Full frame + mirror image + crops + rotations, each one hash.
VARIANT_COUNT = 2 + len(CROP_VARIANTS) + len(ROTATION_VARIANTS)
if VARIANT_COUNT > MAX_IMAGE_HASHES:  # the server would refuse every iset
    raise RuntimeError(f"{VARIANT_COUNT} image variants exceed MAX_IMAGE_HASHES = {MAX_IMAGE_HASHES}")
# Files larger than this are refused before decoding: no photo needs more.
MAX_FILE_BYTES = 64 * 1024 * 1024
# Formats photos come in. Others (EPS, PSD, ICO, ...) are refused: they are
# not photographs and some of Pillow's readers for them are large attack
# surfaces (EPS even runs Ghostscript).
SUPPORTED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")
_FORMAT_LIST = "JPEG, PNG, GIF, BMP, TIFF or WebP"

# Exceptions Pillow's decoders raise on damaged data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


class ImageError(ValueError):
    """An input that cannot be hashed; the message is one line for the user."""


def hash_image(image: ImageSource) -> bytes:
    """Return the `HASH_BYTES`-long key of a photo (path or file bytes)."""
    return hash_loaded(load_image(image))


def index_hashes(image: ImageSource) -> list[bytes]:
    """Return the keys `iset` stores: the full frame first, then each variant."""
    return [hash_loaded(v) for v in variant_images(load_image(image))]


def variant_images(img: Image.Image) -> list[Image.Image]:
    """The full frame (first: it names the image), its mirror image, the crops
    and the rotations whose keys `iset` stores; `VARIANT_COUNT` of them."""
    return [
        img,
        ImageOps.mirror(img),
        *(crop_border(img, f) for f in CROP_VARIANTS),
        *(straighten(img, degrees) for degrees in ROTATION_VARIANTS),
    ]


def hash_loaded(img: Image.Image) -> bytes:
    """Key of an image already returned by `load_image` (or cropped from one)."""
    horizontal = imagehash.dhash(img, DHASH_GRID).hash
    vertical = imagehash.dhash_vertical(img, DHASH_GRID).hash
    bits = np.concatenate([horizontal.ravel(), vertical.ravel()])
    return np.packbits(bits).tobytes()


def hash_hex(h: bytes) -> str:
    """Printable form of a key."""
    return h.hex()


def distance(a: bytes, b: bytes) -> int:
    """Hamming distance between two keys of equal length."""
    if len(a) != len(b):
        raise ValueError(f"cannot compare keys of {len(a)} and {len(b)} bytes")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).bit_count()


def matches(a: bytes, b: bytes, max_distance: int = DEFAULT_MAX_DISTANCE) -> bool:
    """Whether two keys are close enough to be the same photo."""
    return distance(a, b) <= max_distance


def crop_border(img: Image.Image, fraction: float) -> Image.Image:
    """Cut `fraction` of the width and height from every edge."""
    dx, dy = round(img.width * fraction), round(img.height * fraction)
    return img.crop((dx, dy, img.width - dx, img.height - dy))


def straighten(img: Image.Image, degrees: float) -> Image.Image:
    """Rotate counter-clockwise and keep the largest centred rectangle of the
    same aspect ratio that the rotated frame covers (no empty corners)."""
    rotated = img.rotate(degrees, Image.Resampling.BICUBIC)
    t = math.radians(abs(degrees))
    w, h = img.size
    scale = 1 / (math.cos(t) + math.sin(t) * max(w / h, h / w))
    dx, dy = round(w * (1 - scale) / 2), round(h * (1 - scale) / 2)
    return rotated.crop((dx, dy, w - dx, h - dy))


def load_image(image: ImageSource) -> Image.Image:
    """Decode and validate an image; return it upright, RGB, within WORK_SIDE."""
    name, data = _read_source(image)
    with warnings.catch_warnings():
        # Pillow warns about damage it works around (a bad TIFF tag, odd
        # EXIF); that is noise to the user. A pixel count above Pillow's limit
        # only warns by default too; that one becomes an error, so a
        # decompression bomb is refused before it is decoded.
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = _decode(name, data)
        try:
            img = _normalise(img)
        except _DECODE_ERRORS as e:
            raise ImageError(f"{name} has corrupt metadata ({e}); re-export it") from None
    img.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.LANCZOS)
    return img


def _read_source(image: ImageSource) -> tuple[str, bytes]:
    if isinstance(image, (bytes, bytearray)):
        name, data = "image data", bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        name, data = repr(os.fspath(image)), _read_file(image)
    else:
        raise TypeError(f"expected a path or bytes, got {type(image).__name__}")
    if not data:
        raise ImageError(f"{name} is empty; expected a {_FORMAT_LIST} image")
    return name, data


def _read_file(path: str | os.PathLike[str]) -> bytes:
    name = repr(os.fspath(path))
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageError(f"{name} is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except OSError as e:
        raise ImageError(f"{name}: cannot read ({e.strerror or e})") from None
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(f"{name} is larger than {MAX_FILE_BYTES} bytes; shrink it first")
    return data


def _decode(name: str, data: bytes) -> Image.Image:
    """Open and fully decode; call with DecompressionBombWarning as an error."""
    try:
        if data.startswith(_JPEG_MAGIC):
            img = _open_jpeg(name, data)
        else:
            img = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)
        _check_pixels(name, img)
        img.load()  # decode everything now, so truncated files fail here
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(_unidentified_message(name, data)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(_bomb_message(name)) from None
    except _DECODE_ERRORS as e:
        raise ImageError(f"{name} is truncated or corrupt ({e}); re-export it") from None
    return img


# Start of every JPEG file: SOI marker, then the first segment's marker.
_JPEG_MAGIC = b"\xff\xd8\xff"


def _open_jpeg(name: str, data: bytes) -> Image.Image:
    """Open a JPEG to be decoded at reduced size (draft mode).

    `Image.open` would apply the decompression-bomb limit to the full size
    and refuse today's 50-200 megapixel phone photos, although only a 1/8
    scale decode is needed. The header's claim is bounded here instead
    (`MAX_JPEG_PIXELS`, and `MAX_JPEG_PIXELS_PER_BYTE` against small forged
    files), and `_check_pixels` applies Pillow's limit to the decoded size.
    Multi-picture (MPO) files are read as their first, main picture.
    """
    img = JpegImagePlugin.JpegImageFile(io.BytesIO(data))
    pixels = img.width * img.height
    if pixels > MAX_JPEG_PIXELS:
        raise ImageError(
            f"{name} is {img.width}x{img.height} pixels, more than the {MAX_JPEG_PIXELS}-pixel "
            "limit for JPEG (possible decompression bomb); shrink it first"
        )
    if pixels > MAX_JPEG_PIXELS_PER_BYTE * len(data):
        raise ImageError(
            f"{name} claims {img.width}x{img.height} pixels in only {len(data)} bytes "
            "(possible decompression bomb); re-export it"
        )
    # Grayscale: the hash reads only luminance, and skipping colour
    # conversion is part of the speed-up.
    img.draft("L", (WORK_SIDE, WORK_SIDE))
    return img


def _check_pixels(name: str, img: Image.Image) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and img.width * img.height > limit:
        raise ImageError(
            f"{name} is {img.width}x{img.height} pixels, more than the {limit}-pixel "
            "limit (possible decompression bomb); shrink it first"
        )


def _bomb_message(name: str) -> str:
    return f"{name} has more than {Image.MAX_IMAGE_PIXELS} pixels (possible decompression bomb); shrink it first"


def _unidentified_message(name: str, data: bytes) -> str:
    fmt = _sniff_format(data)
    if fmt is None:
        return f"{name} is not an image (expected {_FORMAT_LIST})"
    return f"{name} is in {fmt} format, which is not supported; convert it to {_FORMAT_LIST}"


def _sniff_format(data: bytes) -> str | None:
    """Name the format of a file the supported readers refused, if Pillow knows it."""
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1"):
        return "HEIC"  # phones' default; Pillow cannot read it without a plugin
    try:
        # Only the header is parsed here; nothing is decoded.
        with Image.open(io.BytesIO(data)) as other:
            return other.format
    except (Image.DecompressionBombError, Image.DecompressionBombWarning, *_DECODE_ERRORS):
        return None


def _normalise(img: Image.Image) -> Image.Image:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = _to_8bit(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGBA", img.size, "white")
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("RGB")


def _to_8bit(img: Image.Image) -> Image.Image:
    # Pillow clips 16-bit and float pixels at 255 when converting to 8 bits,
    # which would turn most 16-bit photos white; rescale instead.
    pixels = np.asarray(img, dtype=np.float64)
    top = 65535.0 if pixels.max(initial=0.0) <= 65535.0 else float(pixels.max())
    scaled = np.clip(pixels * (255.0 / top), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled)
