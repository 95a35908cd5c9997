"""Files of a training run folder that an interruption must not damage: the per-epoch log and state files.

``log.jsonl`` holds one JSON object per epoch, appended as each epoch ends (`append_record`, `read_log`);
optimiser state is written with `atomic_torch_save` (temporary file, then rename).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` through a temporary file and a rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` to a JSON-lines log as one line (NaN and infinities written as null)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(_plain(record), allow_nan=False) + "\n")


def _plain(value: Any) -> Any:
    """JSON-ready copy: numpy scalars as Python numbers, NaN and infinities as None."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a training log (``log.jsonl``), one dict per epoch; none when it does not exist."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
