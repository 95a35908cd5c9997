"""How a dataset's micrographs are split into train, valid and test: listed by name, or a seeded shuffle."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

SPLITS = ("train", "valid", "test")


def split_names(names: Sequence[str], dataset: str, *, valid_fraction: float = 0.1,
                test_fraction: float = 0.1, seed: int = 0,
                explicit: dict[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """Assign micrograph keys to train/valid/test.

    With ``explicit`` (split -> keys), the listed keys go where they are listed and the rest to train
    (unless ``train`` is listed too, in which case unlisted micrographs are left out). Otherwise a seeded
    shuffle (seed and dataset name, so adding a dataset leaves the others' splits unchanged) gives
    ``round(n * valid_fraction)`` validation micrographs (at least 1 when n >= 3) and
    ``round(n * test_fraction)`` test micrographs (at least 1 when n >= 5); tiny datasets train on all.
    """
    names = list(names)
    if explicit:
        out: dict[str, list[str]] = {s: [] for s in SPLITS}
        where = {k: s for s, keys in explicit.items() for k in keys}
        for n in names:
            part = where.get(n, None if "train" in explicit else "train")
            if part is not None:
                out[part].append(n)
        return out
    n = len(names)
    n_valid = max(1, round(n * valid_fraction)) if n >= 3 and valid_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if n >= 5 and test_fraction > 0 else 0
    rng = np.random.default_rng([seed, zlib.crc32(dataset.encode())])
    order = [names[i] for i in rng.permutation(n)]
    valid, test = order[:n_valid], order[n_valid:n_valid + n_test]
    chosen = set(valid) | set(test)
    return {"train": [m for m in names if m not in chosen], "valid": sorted(valid, key=names.index),
            "test": sorted(test, key=names.index)}
