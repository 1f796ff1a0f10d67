"""Measure which perceptual hash and threshold `iget` should use.

Run from the repository root:

    python -m benchmarks.image_hash_eval                      # print the tables
    python -m benchmarks.image_hash_eval --write docs/images.md

Corpus: the real photographs shipped inside scikit-image's data folder (no
download). Each is edited the ways a user's copy typically differs from the
stored one; every edited copy is looked up among the stored originals, and
every image of every other photo serves as a distractor. The exit status is 1
if the setting in client/images.py misses the requirement (>= 95% of edited
copies found, no other photo's metadata ever returned).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import imagehash
import numpy as np
import skimage.data
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from benchmarks import replace_doc_section
from client import images

# Photographs in skimage's data folder: camera, microscope and telescope shots.
PHOTOS: tuple[str, ...] = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png",
    "clock_motion.png", "coffee.png", "coins.png", "grass.png", "gravel.png",
    "hubble_deep_field.jpg", "ihc.png", "microaneurysms.png", "moon.png",
    "motorcycle_left.png", "motorcycle_right.png", "page.png", "retina.jpg",
    "rocket.jpg", "text.png",
)  # fmt: skip
# Everything else in the folder, and why it is left out.
EXCLUDED: dict[str, str] = {
    "chessboard_GRAY.png, chessboard_RGB.png": "synthetic test pattern",
    "color.png": "synthetic colour wheel",
    "horse.png": "drawn silhouette",
    "logo.png": "drawn logo",
    "phantom.png": "synthetic Shepp-Logan phantom",
    "multipage.tif, multipage_rgb.tif": "tiny synthetic TIFF test files",
    "no_time_for_that_tiny.gif": "14x25 animated GIF",
    "lfw_subset.npy": "25x25 face crops stored as an array, not image files",
    "motorcycle_disp.npz": "disparity map, not a photograph",
}

REQUIRED_RECALL = 0.95
# Edits no stored variant was tuned to: crops between and beyond the variants'
# amounts, and rotations other than the variants' 4 degrees.
HELD_OUT_CROPS: tuple[float, ...] = (0.01, 0.03, 0.04, 0.06, 0.08, 0.10, 0.13)
HELD_OUT_ROTATIONS: tuple[float, ...] = (2.0, -3.0, -5.0, 6.0)
# Synthetic phone-sized JPEGs timed by `jpeg_timing` (width, height).
TIMED_JPEG_SIZES: tuple[tuple[int, int], ...] = ((6000, 4000), (12000, 9000))
TIMING_RUNS = 5
# Thresholds of the overview table, as fractions of the hash length.
SWEEP_FRACTIONS: tuple[float, ...] = (0.04, 0.08, 0.12, 0.16, 0.20, 0.24, 0.28)
# Thresholds of the chosen algorithm's detailed table.
DETAIL_THRESHOLDS = range(0, 81, 8)
WATERMARK_TEXT = "(c) paxoskv 2024"


def _png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def _jpeg(img: Image.Image, quality: int) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _scaled(img: Image.Image, factor: float) -> bytes:
    size = (round(img.width * factor), round(img.height * factor))
    return _png(img.resize(size, Image.Resampling.LANCZOS))


def _watermarked(img: Image.Image) -> bytes:
    """Semi-transparent outlined text in the bottom-right corner, 1/20 of the height."""
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    font = ImageFont.load_default(size=max(10, img.height // 20))
    left, top, right, bottom = draw.textbbox((0, 0), WATERMARK_TEXT, font=font)
    margin = img.height // 50
    x = img.width - (right - left) - margin - left
    y = img.height - (bottom - top) - margin - top
    draw.text((x, y), WATERMARK_TEXT, font=font, fill=(255, 255, 255, 180),
              stroke_width=1, stroke_fill=(0, 0, 0, 180))  # fmt: skip
    return _png(Image.alpha_composite(img.convert("RGBA"), layer).convert("RGB"))


# Each edit turns the decoded original into the bytes of the edited file.
EDITS: dict[str, Callable[[Image.Image], bytes]] = {
    "scale 50%": lambda img: _scaled(img, 0.50),
    "scale 75%": lambda img: _scaled(img, 0.75),
    "JPEG q50": lambda img: _jpeg(img, 50),
    "JPEG q70": lambda img: _jpeg(img, 70),
    "brightness +15%": lambda img: _png(ImageEnhance.Brightness(img).enhance(1.15)),
    "brightness -15%": lambda img: _png(ImageEnhance.Brightness(img).enhance(0.85)),
    "blur r=1": lambda img: _png(img.filter(ImageFilter.GaussianBlur(1))),
    "crop 2%": lambda img: _png(images.crop_border(img, 0.02)),
    "crop 5%": lambda img: _png(images.crop_border(img, 0.05)),
    "crop 12%": lambda img: _png(images.crop_border(img, 0.12)),
    "crop 15%": lambda img: _png(images.crop_border(img, 0.15)),
    "watermark": _watermarked,
    "mirror": lambda img: _png(ImageOps.mirror(img)),
    # Rotated and cropped to the upright rectangle, as phone editors straighten.
    "rotate 5°": lambda img: _png(images.straighten(img, 5.0)),
}
HELD_OUT_EDITS: dict[str, Callable[[Image.Image], bytes]] = {
    **{f"crop {c:.0%}": (lambda img, c=c: _png(images.crop_border(img, c))) for c in HELD_OUT_CROPS},
    **{f"rotate {r:g}°": (lambda img, r=r: _png(images.straighten(img, r))) for r in HELD_OUT_ROTATIONS},
}


@dataclass(frozen=True)
class Sample:
    photo: str
    edit: str  # "original", a key of EDITS or of HELD_OUT_EDITS
    image: Image.Image  # as client.images.load_image returns it


@dataclass(frozen=True)
class Candidate:
    name: str
    bits: int
    key: Callable[[Image.Image], int]


def _bits_of(h: imagehash.ImageHash) -> int:
    return int("".join("1" if b else "0" for b in h.hash.ravel()), 2)


def _combined(*parts: tuple[int, Callable[[Image.Image], imagehash.ImageHash]]) -> Callable[[Image.Image], int]:
    def key(img: Image.Image) -> int:
        value = 0
        for bits, fn in parts:
            value = (value << bits) | _bits_of(fn(img))
        return value

    return key


def _candidate(name: str, *parts: tuple[int, Callable[[Image.Image], imagehash.ImageHash]]) -> Candidate:
    return Candidate(name, sum(bits for bits, _ in parts), _combined(*parts))


AHASH = (64, imagehash.average_hash)
PHASH = (64, imagehash.phash)
DHASH = (64, imagehash.dhash)
WHASH = (64, imagehash.whash)
CANDIDATES: tuple[Candidate, ...] = (
    _candidate("ahash", AHASH),
    _candidate("phash", PHASH),
    _candidate("dhash", DHASH),
    _candidate("whash (haar)", WHASH),
    _candidate("colorhash", (42, imagehash.colorhash)),
    _candidate("phash 16x16", (256, lambda img: imagehash.phash(img, 16))),
    _candidate("dhash 16x16", (256, lambda img: imagehash.dhash(img, 16))),
    _candidate("phash+dhash", PHASH, DHASH),
    _candidate("ahash+phash+dhash+whash", AHASH, PHASH, DHASH, WHASH),
    _candidate("dhash 12x12", (144, lambda img: imagehash.dhash(img, 12))),
    Candidate("dhash 12x12 h+v (chosen key)", images.HASH_BITS,
              lambda img: int.from_bytes(images.hash_loaded(img), "big")),
)  # fmt: skip
CHOSEN = CANDIDATES[-1]


def load_corpus() -> tuple[list[Sample], list[Sample]]:
    """Return (originals and required edits, held-out edits)."""
    main: list[Sample] = []
    held_out: list[Sample] = []
    for photo in PHOTOS:
        data = (Path(skimage.data.data_dir) / photo).read_bytes()
        original = Image.open(io.BytesIO(data)).convert("RGB")
        main.append(Sample(photo, "original", images.load_image(data)))
        for edit, apply in EDITS.items():
            main.append(Sample(photo, edit, images.load_image(apply(original))))
        for edit, apply in HELD_OUT_EDITS.items():
            held_out.append(Sample(photo, edit, images.load_image(apply(original))))
    return main, held_out


@dataclass(frozen=True)
class Keys:
    """One candidate's keys for a list of samples: full frame (+ the variants iset stores)."""

    full: list[int]
    stored: list[list[int]]  # what iset would store per sample, per mode


def compute_keys(candidate: Candidate, samples: Sequence[Sample], variants: bool) -> Keys:
    full, stored = [], []
    for s in samples:
        key = candidate.key(s.image)
        full.append(key)
        # variant_images starts with the full frame itself.
        stored.append([candidate.key(v) for v in images.variant_images(s.image)] if variants else [key])
    return Keys(full, stored)


def _distance_matrix(queries: list[int], stored: list[list[int]]) -> np.ndarray:
    return np.array([[min((q ^ k).bit_count() for k in keys) for keys in stored] for q in queries])


@dataclass(frozen=True)
class Measurement:
    """Distances one candidate (in one storage mode) produces on the corpus."""

    bits: int
    own: np.ndarray  # edited copy -> its own original
    other: np.ndarray  # edited copy -> nearest original of another photo
    held_own: np.ndarray
    held_other: np.ndarray
    cross: np.ndarray  # every ordered (query, stored) pair of different photos
    closest: list[tuple[int, str, str]]  # nearest pairs of different photos

    def recall(self, t: int, held_out: bool = False) -> float:
        own, other = (self.held_own, self.held_other) if held_out else (self.own, self.other)
        # A tie with another photo is a miss: recency could pick either.
        return float(np.mean((own <= t) & (own < other)))

    def wrong_answers(self, t: int) -> int:
        return int(np.sum((self.other <= t) & (self.other <= self.own)))

    def false_matches(self, t: int) -> int:
        return int(np.sum(self.cross <= t))

    def safe_threshold(self) -> int:
        """Largest threshold with no false match."""
        return int(self.cross.min()) - 1


def _own_and_other(
    dist: np.ndarray, query_photos: list[str], stored_photos: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: distance to its own photo's stored image, and to the nearest other photo's."""
    same = np.array([[q == s for s in stored_photos] for q in query_photos])
    own = np.where(same, dist, np.iinfo(np.int64).max).min(axis=1)
    other = np.where(same, np.iinfo(np.int64).max, dist).min(axis=1)
    return own, other


def measure(candidate: Candidate, main: list[Sample], held_out: list[Sample], variants: bool) -> Measurement:
    keys = compute_keys(candidate, main, variants)
    held = compute_keys(candidate, held_out, variants=False)
    originals = [i for i, s in enumerate(main) if s.edit == "original"]
    edits = [i for i, s in enumerate(main) if s.edit != "original"]
    photos = [s.photo for s in main]
    all_pairs = _distance_matrix(keys.full, keys.stored)
    stored_photos = [photos[i] for i in originals]
    own, other = _own_and_other(all_pairs[np.ix_(edits, originals)], [photos[i] for i in edits], stored_photos)
    held_dist = _distance_matrix(held.full, [keys.stored[i] for i in originals])
    held_own, held_other = _own_and_other(held_dist, [s.photo for s in held_out], stored_photos)
    different = np.array([[p != q for q in photos] for p in photos])
    order = np.argsort(np.where(different, all_pairs, np.iinfo(np.int64).max), axis=None, kind="stable")
    closest = []
    for flat in order[:3]:
        i, j = divmod(int(flat), len(main))
        closest.append((int(all_pairs[i, j]), _label(main[i]), _label(main[j])))
    return Measurement(candidate.bits, own, other, held_own, held_other, all_pairs[different], closest)


def _label(s: Sample) -> str:
    return f"{s.photo} ({s.edit})"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def overview_table(results: list[tuple[str, Measurement]]) -> str:
    lines = [
        "| algorithm | stored | bits | worst edit | nearest other photo | largest safe t "
        "| recall at safe t | held-out edits at safe t | meets requirement |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, m in results:
        t = m.safe_threshold()
        ok = t >= 0 and m.recall(t) >= REQUIRED_RECALL
        lines.append(
            f"| {label} | {m.bits} | {int(m.own.max())} | {int(m.cross.min())} | {t} "
            f"| {_pct(m.recall(t))} | {_pct(m.recall(t, held_out=True))} | {'yes' if ok else 'no'} |"
        )
    return "\n".join(lines)


def sweep_table(results: list[tuple[str, Measurement]]) -> str:
    head = " | ".join(f"t = {f:.0%} of bits" for f in SWEEP_FRACTIONS)
    lines = [f"| algorithm | stored | {head} |", "|---|---|" + "---:|" * len(SWEEP_FRACTIONS)]
    for label, m in results:
        cells = []
        for fraction in SWEEP_FRACTIONS:
            t = round(fraction * m.bits)
            cells.append(f"t={t}: {_pct(m.recall(t))} / {m.false_matches(t)}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(m: Measurement) -> str:
    lines = [
        "| threshold | recall on edits | wrong answers | false matches | held-out edits found |",
        "|---:|---:|---:|---:|---:|",
    ]
    thresholds = sorted({*DETAIL_THRESHOLDS, images.DEFAULT_MAX_DISTANCE})
    for t in thresholds:
        mark = " (default)" if t == images.DEFAULT_MAX_DISTANCE else ""
        lines.append(
            f"| {t}{mark} | {_pct(m.recall(t))} | {m.wrong_answers(t)} | {m.false_matches(t)} "
            f"| {_pct(m.recall(t, held_out=True))} |"
        )
    return "\n".join(lines)


def per_edit_table(m: Measurement, samples: list[Sample], held_out: bool = False) -> str:
    """Found/median/max per edit, of the required edits or of the held-out ones."""
    t = images.DEFAULT_MAX_DISTANCE
    edit_names = [s.edit for s in samples if s.edit != "original"]
    own_all, other_all = (m.held_own, m.held_other) if held_out else (m.own, m.other)
    lines = [f"| edit | found at t={t} | median distance | max distance |", "|---|---:|---:|---:|"]
    for edit in HELD_OUT_EDITS if held_out else EDITS:
        rows = [i for i, name in enumerate(edit_names) if name == edit]
        own = own_all[rows]
        found = int(np.sum((own <= t) & (own < other_all[rows])))
        lines.append(f"| {edit} | {found}/{len(rows)} | {statistics.median(own.tolist()):g} | {int(own.max())} |")
    return "\n".join(lines)


def synthetic_photo_jpeg(width: int, height: int) -> bytes:
    """A phone-sized JPEG: chelsea.png upscaled, with sensor-like noise, quality 90.

    No real photo of that size ships with the corpus; the noise gives the file
    a phone photo's size (about 1 MB per 4 megapixels) and decoding cost.
    """
    base = Image.open(Path(skimage.data.data_dir) / "chelsea.png").convert("RGB")
    pixels = np.asarray(base.resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    noise = np.random.default_rng(1).normal(0, 6, (height, width, 1)).astype(np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def jpeg_timing() -> str:
    """Median wall-clock time of `hash_image` on synthetic phone-sized JPEGs."""
    lines = ["| JPEG | file size | hash_image median | min |", "|---|---:|---:|---:|"]
    for width, height in TIMED_JPEG_SIZES:
        data = synthetic_photo_jpeg(width, height)
        times = []
        for _ in range(TIMING_RUNS):
            start = time.perf_counter()
            images.hash_image(data)
            times.append(time.perf_counter() - start)
        lines.append(
            f"| {width}x{height} ({width * height / 1e6:.0f} MP) | {len(data) / 1e6:.1f} MB "
            f"| {1000 * statistics.median(times):.0f} ms | {1000 * min(times):.0f} ms |"
        )
    return "\n".join(lines)


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def report(main: list[Sample], held_out: list[Sample]) -> tuple[str, bool]:
    results: list[tuple[str, Measurement]] = []
    chosen: Measurement | None = None
    for candidate in CANDIDATES:
        for variants in (False, True):
            m = measure(candidate, main, held_out, variants)
            mode = "full + variants" if variants else "full frame"
            results.append((f"{candidate.name} | {mode}", m))
            if candidate is CHOSEN and variants:
                chosen = m
    assert chosen is not None
    t = images.DEFAULT_MAX_DISTANCE
    met = chosen.recall(t) >= REQUIRED_RECALL and chosen.false_matches(t) == 0
    closest = "\n".join(f"- {d} bits: {a} vs {b}" for d, a, b in chosen.closest)
    text = f"""\
Corpus: {len(PHOTOS)} photographs, {len(EDITS)} edits each = {len(chosen.own)} edited copies
(+ {len(held_out)} held-out edits); {len(chosen.cross)} ordered pairs of images of different photos.
Pillow {metadata.version("Pillow")}, ImageHash {metadata.version("ImageHash")}, \
scikit-image {metadata.version("scikit-image")},
Python {platform.python_version()}.

#### Overview: best threshold of each candidate

"Worst edit" is the largest distance from an edited copy to its original;
"nearest other photo" the smallest distance between images of different
photos; the largest safe threshold is one below that.

{overview_table(results)}

#### Threshold sweep: recall on edits / false matches

{sweep_table(results)}

#### Chosen: {CHOSEN.name}, stored with {images.VARIANT_COUNT - 1} variants

Stored per photo: the full frame, its mirror image, crops of \
{", ".join(f"{f:.1%}" for f in images.CROP_VARIANTS)} and rotations of \
{", ".join(f"{r:+g}°" for r in images.ROTATION_VARIANTS)}.

{detail_table(chosen)}

Per edit at the default threshold:

{per_edit_table(chosen, main)}

Held-out edits (no stored variant has these amounts):

{per_edit_table(chosen, held_out, held_out=True)}

Closest images of different photos under the chosen key:

{closest}

Requirement (>= {REQUIRED_RECALL:.0%} found, 0 false matches) at t={t}: {"met" if met else "NOT MET"}.

#### Hashing time of large JPEGs

Synthetic photos (chelsea.png upscaled, noise added, quality 90), \
{TIMING_RUNS} runs each, {os.cpu_count()} CPUs, load average {_load()}:

{jpeg_timing()}
"""
    return text, met


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--write", type=Path, metavar="DOC", help="update the generated section of DOC")
    args = parser.parse_args(argv)
    main_set, held_out = load_corpus()
    text, met = report(main_set, held_out)
    print(text)
    if args.write:
        replace_doc_section(args.write, "image_hash_eval", text)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
