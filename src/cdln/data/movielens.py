"""MovieLens-100K as a matrix-completion problem: parse ``u.data``, split, build.

``u.data`` holds one rating per line, ``user<TAB>item<TAB>rating<TAB>timestamp``, users 1..943,
items 1..1682, ratings 1..5. The ratings matrix is users x items (943 x 1682); the observed
ratings are split at random (seeded) into training entries, which the networks fit, and held-out
entries, on which the recovery error (1/2 mean squared error) is reported. Where the ratings come from, and
their checksum: :mod:`cdln.data.movielens_sources`.
"""

from __future__ import annotations

import io
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cdln import seeding
from cdln.data import DataFormatError
from cdln.data.movielens_sources import RATINGS_MEMBER, RatingsFile
from cdln.outputs import atomic_write
from cdln.problems import Completion
from cdln.spec import ProblemSpec

N_USERS, N_ITEMS = 943, 1682
RATING_RANGE = (1, 5)


@dataclass(frozen=True)
class Ratings:
    """Observed ratings as 0-based index arrays (n,) plus the matrix shape (users x items)."""

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray
    n_users: int = N_USERS
    n_items: int = N_ITEMS

    def __len__(self) -> int:
        return len(self.values)


def parse_ratings(text: str, source: str, n_users: int = N_USERS, n_items: int = N_ITEMS) -> Ratings:
    """Parse ``u.data`` text; blank lines are skipped, anything else wrong raises :class:`DataFormatError`.

    Rejected, each with the file and line number: lines without exactly 4 tab-separated integer
    fields, user ids outside 1..n_users, item ids outside 1..n_items, ratings outside 1..5 and a
    (user, item) pair rated twice (both line numbers named).
    """
    users, items, values = [], [], []
    first_line: dict[tuple[int, int], int] = {}
    low, high = RATING_RANGE
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        where = f"{source}, line {number}"
        if len(fields) != 4:
            raise DataFormatError(
                f"{where}: expected 4 tab-separated fields (user, item, rating, timestamp); got {line!r}"
            )
        try:
            user, item, rating, _ = (int(field) for field in fields)
        except ValueError:
            raise DataFormatError(f"{where}: fields must be integers; got {line!r}") from None
        if not 1 <= user <= n_users:
            raise DataFormatError(f"{where}: user id {user} outside 1..{n_users}")
        if not 1 <= item <= n_items:
            raise DataFormatError(f"{where}: item id {item} outside 1..{n_items}")
        if not low <= rating <= high:
            raise DataFormatError(f"{where}: rating {rating} outside {low}..{high}")
        if (user, item) in first_line:
            raise DataFormatError(
                f"{where}: user {user} rated item {item} twice (first on line {first_line[user, item]})"
            )
        first_line[user, item] = number
        users.append(user - 1)
        items.append(item - 1)
        values.append(rating)
    if not values:
        raise DataFormatError(f"{source}: no ratings found")
    return Ratings(np.array(users), np.array(items), np.array(values, dtype=np.float64), n_users, n_items)


def read_ml100k(ratings: RatingsFile) -> Ratings:
    """Parse verified ratings (:func:`find_ratings`); ``u.data`` must be ASCII text."""
    try:
        text = ratings.data.decode("ascii")
    except UnicodeDecodeError as error:
        raise DataFormatError(f"{ratings.source}: u.data is not ASCII text ({error})") from None
    return parse_ratings(text, ratings.source)


def slice_ratings(ratings: Ratings, n_users: int | None, n_items: int | None) -> Ratings:
    """Keep users ``< n_users`` and items ``< n_items`` (0-based): a small slice for quick runs."""
    n_users = ratings.n_users if n_users is None else min(n_users, ratings.n_users)
    n_items = ratings.n_items if n_items is None else min(n_items, ratings.n_items)
    keep = (ratings.users < n_users) & (ratings.items < n_items)
    if not keep.any():
        raise DataFormatError(f"the slice of {n_users} users x {n_items} items holds no ratings")
    return Ratings(ratings.users[keep], ratings.items[keep], ratings.values[keep], n_users, n_items)


def split_ratings(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random split of ``n`` ratings into (train, test) index arrays, ``round(test_fraction n)`` test."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"movielens test_fraction must be in (0, 1); got {test_fraction}")
    n_test = round(test_fraction * n)
    if n_test < 1 or n_test >= n:
        raise ValueError(f"test_fraction {test_fraction} of {n} ratings leaves an empty train or test set")
    order = torch.randperm(n, generator=seeding.generator(seed, "split")).numpy()
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def completion_problem(ratings: Ratings, rank: int, test_fraction: float, split_seed: int) -> Completion:
    """The ratings as an MC problem: target = ratings (0 where unknown), mask = training entries,
    heldout = test entries. ``spec.p`` is the fraction of all entries used for training."""
    train, test = split_ratings(len(ratings), test_fraction, split_seed)
    shape = (ratings.n_users, ratings.n_items)
    target = torch.zeros(shape, dtype=torch.float64)
    target[ratings.users, ratings.items] = torch.from_numpy(ratings.values)
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[ratings.users[train], ratings.items[train]] = True
    heldout = torch.zeros(shape, dtype=torch.bool)
    heldout[ratings.users[test], ratings.items[test]] = True
    p = len(train) / (shape[0] * shape[1])
    spec = ProblemSpec("mc", shape[0], shape[1], rank, data_seed=split_seed, p=p)
    return Completion(spec, target, mask, heldout=heldout)


def synthetic_ml100k(
    path: str | Path,
    seed: int = 0,
    n_ratings: int = 100_000,
    n_users: int = N_USERS,
    n_items: int = N_ITEMS,
    rank: int = 10,
) -> Path:
    """Write a stand-in ``ml-100k.zip`` of the same format and size (NOT MovieLens data).

    Ratings are a rank-``rank`` user/item model plus noise, rounded and clipped to 1..5 (mean
    about 3.5); which pairs are rated follows heavy-tailed user activity and item popularity, as in
    the real data. Used by the tests and to check the pipeline without the licensed file.
    """
    rng = np.random.default_rng(seed)
    if n_ratings > n_users * n_items:
        raise ValueError(f"cannot draw {n_ratings} distinct ratings from {n_users} x {n_items}")
    activity = rng.pareto(1.5, n_users) + 1.0
    popularity = rng.pareto(1.2, n_items) + 1.0
    logits = np.log(activity)[:, None] + np.log(popularity)[None, :]
    keys = logits.ravel() + rng.gumbel(size=n_users * n_items)  # Gumbel top-k: sampling without replacement
    flat = np.argpartition(-keys, n_ratings - 1)[:n_ratings]
    users, items = np.divmod(flat, n_items)
    user_f = rng.normal(size=(n_users, rank)) / math.sqrt(rank)
    item_f = rng.normal(size=(n_items, rank)) / math.sqrt(rank)
    scores = 3.5 + 0.4 * rng.normal(size=n_items)[items] + 0.9 * np.einsum("nk,nk->n", user_f[users], item_f[items])
    ratings = np.clip(np.rint(scores + 0.6 * rng.normal(size=n_ratings)), 1, 5).astype(int)
    stamps = rng.integers(874_724_710, 893_286_638, size=n_ratings)
    order = rng.permutation(n_ratings)
    lines = (f"{users[i] + 1}\t{items[i] + 1}\t{ratings[i]}\t{stamps[i]}" for i in order)
    buffer = io.StringIO()
    buffer.write("\n".join(lines) + "\n")

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(RATINGS_MEMBER, buffer.getvalue())

    return atomic_write(path, write)
