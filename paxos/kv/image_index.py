"""Nearest-neighbour index over perceptual image hashes (Hamming distance).

Every replica builds this index while applying the log, so it is pure
Python, does no I/O and is deterministic: the same `add`/`remove` calls in the
same order give the same answers (results are fully sorted before they are
returned, and the layout depends only on that call sequence).

Method: multi-index hashing (Norouzi, Punjani and Fleet, "Fast search in
Hamming space with multi-index hashing", CVPR 2012). Each B-bit hash is cut
into m chunks of w bits, and each chunk keeps a dict from chunk value to the
hashes that have it. If two hashes are within distance d, write
d = m*r + a with 0 <= a < m: by the pigeonhole principle one of the first a+1
chunks differs in at most r bits, or one of the others in at most r-1 bits
(otherwise the distance would be at least (a+1)(r+1) + (m-a-1)r = d+1). A
lookup probes, per chunk, every value within that radius, verifies the full
distance of each hash found there, and so misses nothing.

Cost of a lookup: P probes, fixed by (B, w, d), plus about P * n / 2**w
candidates to verify. With w fixed the second term would grow linearly with
n, so w grows with the index: w = max(`MIN_CHUNK_BITS`, bit length of n),
keeping about one hash per bucket. Widening chunks raises P, but slower
than n grows: for 288-bit hashes at d = 48, tripling the index from 100,000
to 300,000 hashes raised the CPU time per lookup 2.4x, and the model P(w) +
P(w) * n / 2**w grows 1.9x (benchmarks/image_index_bench.py). The index
is rebuilt when w grows (only when n doubles, so amortised O(1) per add,
but that one add takes seconds at 2**17 hashes: see `ImageIndex.__init__`);
it never narrows, so removals cannot make it rebuild back and forth. Should
the probes outnumber the stored hashes (a huge d), a lookup scans them all
instead: same answer, bounded cost.

Why not a BK-tree: its shape, and so its cost, depends on insertion order,
and it degrades towards a full scan once the threshold is a sizeable fraction
of the hash length (here 1/6): nearly every subtree's distance ring overlaps
the query's.

One image is usually stored under several hashes (its full frame and crop
variants) with one ref; `nearest` reports each ref once, at its closest hash.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from functools import cache

# Narrowest chunk. Narrower chunks mean fewer probes but more hashes per
# bucket; below 2**16 hashes the probes dominate, so chunks stay this wide.
MIN_CHUNK_BITS = 16
# Widest chunk: the probe tables for wider chunks (C(w, r) masks) get large.
MAX_CHUNK_BITS = 24
# A lookup needing more probes than this scans every hash instead, which also
# bounds the size of the cached probe tables.
MAX_PROBES = 100_000

Match = tuple[int, bytes, int]  # (distance, hash, ref)


class ImageIndex:
    """Hashes of one fixed length, each mapped to the ref of its latest `add`."""

    def __init__(self, hash_bytes: int, chunk_bits: int = MIN_CHUNK_BITS) -> None:
        """`chunk_bits` is the starting chunk width. Widening rebuilds the
        index inside one `add` (seconds at 2**17 hashes and more), so a server
        expecting about N hashes can start at N.bit_length() and never
        rebuild below that size. Replicas must all use the same value.
        """
        if hash_bytes <= 0:
            raise ValueError(f"hash_bytes must be positive, got {hash_bytes}")
        if not 1 <= chunk_bits <= MAX_CHUNK_BITS:
            raise ValueError(f"chunk_bits must be in 1..{MAX_CHUNK_BITS}, got {chunk_bits}")
        self._hash_bytes = hash_bytes
        self._refs: dict[int, int] = {}  # hash as int -> ref
        self._layout(chunk_bits)

    def __len__(self) -> int:
        return len(self._refs)

    def __contains__(self, h: object) -> bool:
        return isinstance(h, bytes) and len(h) == self._hash_bytes and self._key(h) in self._refs

    @property
    def chunk_bits(self) -> int:
        """Current chunk width (grows with the index)."""
        return self._chunk_bits

    def ref_of(self, h: bytes) -> int | None:
        """The ref stored for exactly this hash, if any."""
        return self._refs.get(self._key(h))

    def items(self) -> list[tuple[bytes, int]]:
        """Every stored (hash, ref), in hash order (e.g. for a snapshot)."""
        return [(self._bytes(key), self._refs[key]) for key in sorted(self._refs)]

    def refs_copy(self) -> dict[int, int]:
        """A copy of the stored hashes (as big-endian integers) and their refs: one C-level copy."""
        return self._refs.copy()

    def add(self, h: bytes, ref: int) -> None:
        """Store `h` for `ref`; a hash added again now belongs to the new ref.

        `ref` is the apply order of the log entry, so a larger ref is more
        recent and wins ties in `nearest`.
        """
        key = self._key(h)
        if key not in self._refs:
            self._insert(key)
        self._refs[key] = ref
        wanted = _chunk_bits_for(len(self._refs))
        if wanted > self._chunk_bits:
            self._layout(wanted)

    def remove(self, h: bytes) -> bool:
        """Forget `h`; return whether it was stored."""
        key = self._key(h)
        if self._refs.pop(key, None) is None:
            return False
        for bucket, value in zip(self._buckets, self._chunk_values(key), strict=True):
            rest = tuple(k for k in bucket[value] if k != key)
            if rest:
                bucket[value] = rest
            else:
                del bucket[value]
        return True

    def nearest(self, h: bytes, max_distance: int, limit: int = 1) -> list[Match]:
        """Up to `limit` refs within `max_distance` of `h`, best first.

        Each ref appears once, with its closest hash. Order: distance, then
        the most recent ref, then the hash bytes (only to make it total).
        """
        if max_distance < 0:
            raise ValueError(f"max_distance must be >= 0, got {max_distance}")
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        query = self._key(h)
        best: dict[int, tuple[int, int]] = {}  # ref -> (distance, hash)
        for key in self._within(query, max_distance):
            d = (key ^ query).bit_count()
            ref = self._refs[key]
            if ref not in best or (d, key) < best[ref]:
                best[ref] = (d, key)
        ranked = sorted(best.items(), key=lambda item: (item[1][0], -item[0], item[1][1]))
        return [(d, self._bytes(key), ref) for ref, (d, key) in ranked[:limit]]

    def _within(self, query: int, max_distance: int) -> set[int]:
        """Every stored hash within max_distance of query."""
        radii = chunk_radii(len(self._chunks), max_distance)
        widths = [width for _, width in self._chunks]
        probes = sum(_ball_size(w, r) for w, r in zip(widths, radii, strict=True))
        if probes >= min(len(self._refs), MAX_PROBES):
            return {key for key in self._refs if (key ^ query).bit_count() <= max_distance}
        found: set[int] = set()
        chunks = zip(self._buckets, self._chunk_values(query), widths, radii, strict=True)
        for bucket, value, width, radius in chunks:
            # This runs thousands of times per lookup, so the probing stays
            # in C (map/filter/chain) and each candidate is verified at once
            # rather than collected first: most candidates are far away.
            probe_values = [value ^ mask for mask in _masks_within(width, radius)]
            holders = itertools.chain.from_iterable(filter(None, map(bucket.get, probe_values)))
            found.update(key for key in holders if (key ^ query).bit_count() <= max_distance)
        return found

    def _layout(self, chunk_bits: int) -> None:
        """(Re)build the chunk tables with chunks `chunk_bits` wide."""
        self._chunk_bits = chunk_bits
        self._chunks = split_bits(8 * self._hash_bytes, chunk_bits)
        # Buckets are tuples: most hold one or two hashes, a tuple is the
        # smallest container, and a tuple of ints is untracked by the cyclic
        # garbage collector, so millions of buckets add nothing to its pauses.
        self._buckets: list[dict[int, tuple[int, ...]]] = [{} for _ in self._chunks]
        for key in sorted(self._refs):
            self._insert(key)

    def _insert(self, key: int) -> None:
        for bucket, value in zip(self._buckets, self._chunk_values(key), strict=True):
            bucket[value] = (*bucket.get(value, ()), key)

    def _chunk_values(self, key: int) -> Iterator[int]:
        for start, width in self._chunks:
            yield (key >> start) & ((1 << width) - 1)

    def _key(self, h: bytes) -> int:
        if not isinstance(h, bytes) or len(h) != self._hash_bytes:
            raise ValueError(f"expected a {self._hash_bytes}-byte hash, got {h!r:.40}")
        return int.from_bytes(h, "big")

    def _bytes(self, key: int) -> bytes:
        return key.to_bytes(self._hash_bytes, "big")


def chunk_radii(chunks: int, max_distance: int) -> list[int]:
    """Search radius per chunk so that no hash within max_distance is missed.

    With d = m*r + a: radius r for the first a+1 chunks, r-1 for the rest
    (-1 meaning that chunk need not be probed at all).
    """
    r, a = divmod(max_distance, chunks)
    return [r if i <= a else r - 1 for i in range(chunks)]


def split_bits(bits: int, chunk_bits: int) -> list[tuple[int, int]]:
    """(start, width) of each chunk, counted from the low end, widths within 1.

    Equal widths matter: a leftover narrow chunk would put a large share of
    the index in each of its buckets.
    """
    count = math.ceil(bits / chunk_bits)
    base, extra = divmod(bits, count)
    widths = [base + 1] * extra + [base] * (count - extra)
    starts = itertools.accumulate(widths[:-1], initial=0)
    return list(zip(starts, widths, strict=True))


def _chunk_bits_for(size: int) -> int:
    """Chunk width that keeps about one hash per bucket at this size."""
    return max(MIN_CHUNK_BITS, min(MAX_CHUNK_BITS, size.bit_length()))


def _ball_size(width: int, radius: int) -> int:
    return sum(math.comb(width, k) for k in range(min(radius, width) + 1))


def _masks_within(width: int, radius: int) -> tuple[int, ...]:
    """Every `width`-bit XOR mask with at most `radius` bits set, fewest first."""
    return _masks_cached(width, max(-1, min(radius, width)))


@cache  # keys are bounded: width <= MAX_CHUNK_BITS, -1 <= radius <= width
def _masks_cached(width: int, radius: int) -> tuple[int, ...]:
    masks: list[int] = []
    for k in range(radius + 1):
        for positions in itertools.combinations(range(width), k):
            masks.append(sum(1 << p for p in positions))
    return tuple(masks)
