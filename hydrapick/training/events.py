"""What a training run reports as it goes: progress events for a callback, and the run folder's log.

`TrainEvent` is what `train` and `finetune` pass to their ``progress`` callback (the command line draws
its progress bars from them). ``log.jsonl`` holds one JSON object per epoch, appended as each epoch ends
(`append_record`, `read_log`); `rewrite_log` replaces it atomically when a resumed run drops the epochs
it is about to run again.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import write_text


@dataclass(frozen=True)
class TrainEvent:
    """Progress report passed to the ``progress`` callback.

    ``kind`` is one of ``load`` (a micrograph was cached; ``step``/``steps`` count them), ``features``
    (fine-tuning computed a micrograph's body features), ``phase`` (a phase starts), ``step``
    (``values`` has the running mean ``loss``), ``epoch`` (``values`` is the epoch's log record),
    ``calibrate`` and ``done`` (``values`` has the thresholds). Fine-tuning first sends ``plan``:
    ``steps`` is every head step it will train (fold heads and the final head), for an overall ETA.
    """

    kind: str
    phase: str = ""
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    steps: int = 0
    values: dict[str, Any] = field(default_factory=dict)
    message: str = ""


ProgressCallback = Callable[[TrainEvent], None]


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append ``record`` to a JSON-lines log as one line (NaN and infinities written as null)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(_plain(record), allow_nan=False) + "\n")


def rewrite_log(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Replace the JSON-lines log at ``path`` with ``records``, atomically."""
    write_text(path, "".join(json.dumps(_plain(r), allow_nan=False) + "\n" for r in records))


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
