"""A phone-sized photo is hashed: 108 megapixels, over Pillow's decompression-bomb limit.

Pure, but about ten seconds of making and decoding the JPEG: too slow for the
fast tier, so it runs with the in-process tier.  The rest of the image hashing
is tests/unit/test_images.py.
"""

from __future__ import annotations

from pathlib import Path

import skimage.data

from benchmarks.image_hash_eval import synthetic_photo_jpeg
from client.images import DEFAULT_MAX_DISTANCE, distance, hash_image

DATA = Path(skimage.data.data_dir)


def test_108_megapixel_jpeg_is_hashed() -> None:
    # Today's phones take 50-200 megapixel photos; 9000x12000 is over
    # Pillow's default decompression-bomb limit (89.5 megapixels).
    large = synthetic_photo_jpeg(9000, 12000)
    assert distance(hash_image(large), hash_image(DATA / "chelsea.png")) <= DEFAULT_MAX_DISTANCE
