"""Random streams: one ``torch.Generator`` per (seed, purpose), so that no draw of one purpose replays another.

A run's data seed and init seed are often the same number (the pipeline pairs the original DLN and
the C-DLN of one seed on one problem instance). Seeding both generators with that number directly
would make the first Gaussian matrix of the initialisation bit-identical to the one the target was
drawn from. Here the generator's seed is a hash of the purpose and the seed, so every purpose has
its own stream for every seed.
"""

from __future__ import annotations

import hashlib

import torch

PURPOSES = ("data", "init", "split", "batches", "block")


def stream_seed(seed: int, purpose: str) -> int:
    """The 63-bit generator seed of ``purpose`` for ``seed`` (stable across runs, machines and versions)."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {list(PURPOSES)}; got {purpose!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seeds must be integers >= 0; got {seed!r}")
    digest = hashlib.blake2b(f"cdln/{purpose}/{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def generator(seed: int, purpose: str) -> torch.Generator:
    """A fresh CPU generator for ``purpose`` ("data": problems, "init": network weights, "split":
    train/test splits, "batches": minibatch order, "block": a classifier block's init) of ``seed``."""
    return torch.Generator().manual_seed(stream_seed(seed, purpose))
