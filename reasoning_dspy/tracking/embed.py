"""A prompt embedder that needs no model: character n-grams hashed into a fixed number of
dimensions. Near-duplicate prompts (a changed number, a reworded clause) land close together, which
is what "have we asked this before?" needs; any other embedder (a sentence-embedding model) can be
passed to the tracker instead, as long as it returns vectors of the configured length."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence

import numpy as np

Embedder = Callable[[str], Sequence[float]]


def as_embedder(embed: object) -> Embedder:
    """A text -> vector function from a callable, or from an object with a batch method
    `embed(texts) -> [n, dim]` (the form sentence-embedding wrappers take)."""
    batch = getattr(embed, "embed", None)
    if callable(batch):
        return lambda text: np.asarray(batch([text]))[0]
    if callable(embed):
        return embed  # type: ignore[return-value]
    raise TypeError(f"an embedder is a callable or has .embed(texts); got {type(embed).__name__}")

_SPACE = re.compile(r"\s+")


class HashingEmbedder:
    """`embed(text)` -> a unit float32 vector of length `dim` from hashed character `n`-grams."""

    def __init__(self, dim: int, n: int = 3):
        if dim < 1 or n < 1:
            raise ValueError("dim and n must be at least 1")
        self.dim, self.n = dim, n

    def __call__(self, text: str) -> np.ndarray:
        vector = np.zeros(self.dim, dtype=np.float32)
        padded = f" {_SPACE.sub(' ', text.lower()).strip()} "
        for i in range(max(1, len(padded) - self.n + 1)):
            digest = hashlib.blake2b(padded[i:i + self.n].encode(), digest_size=8).digest()
            h = int.from_bytes(digest, "little")
            vector[h % self.dim] += 1.0 if (h >> 63) & 1 else -1.0  # signed hashing keeps collisions unbiased
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector
