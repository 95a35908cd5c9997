"""Save and load a HydraPicker as one self-describing file.

The file is ``torch.save`` of a plain dict::

    {"format": "hydrapick-checkpoint", "format_version": 1, "dtype": "float32" | "float16",
     "state_dict": {name: tensor}, "metadata": {... plain Python values ...}}

Only tensors and plain Python values are stored, so it loads with ``torch.load(weights_only=True)`` and
never unpickles code. The metadata records everything needed to rebuild the model (``model_config``,
``heads``) plus what a user or a later run needs to trust it: versions, thresholds, diameters, training
summary, seed, command, creation time. A head fine-tuned with its own copy of late body blocks
(``heads.NAME.body_tail.*`` weights) is rebuilt with them from those keys alone, so older files load
as before.

`load_model` loads one for picking: a checkpoint file, or the bundled generic model (package data under
``hydrapick/weights``, read through `importlib.resources`).
"""

from __future__ import annotations

import datetime as _dt
import importlib.resources
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig, from_dict, to_dict
from .io.atomic import save_torch
from .model import GENERIC_HEAD, HydraPicker, body_tails_in
from .version import __version__

FORMAT = "hydrapick-checkpoint"
FORMAT_VERSION = 1
BUNDLED_MODEL = "generic.pt"  # file name of the bundled generic model under hydrapick/weights/

_PLAIN = (str, int, float, bool, type(None))


class CheckpointError(ValueError):
    """The file is not a hydrapick checkpoint, is damaged, or comes from an incompatible format version."""


def _check_plain(value: Any, where: str) -> Any:
    """Return ``value`` with tuples as lists; raise TypeError naming ``where`` for non-plain values."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"checkpoint metadata key {where}.{k!r} is not a string")
            out[k] = _check_plain(v, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [_check_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(f"checkpoint metadata {where} is a {type(value).__name__}; only str, int, float, "
                    "bool, None, lists and dicts can be stored")


def save_checkpoint(path: str | os.PathLike, model: HydraPicker, metadata: Mapping[str, Any] | None = None,
                    *, half: bool = False) -> Path:
    """Write ``model`` and ``metadata`` to ``path`` atomically (temporary file, then rename).

    ``format_version``, ``hydrapick_version``, ``model_config`` and ``heads`` are always set from the
    model; ``created`` (UTC, ISO 8601) is added when absent. Other keys (thresholds, diameters_A,
    training, seed, command, ...) are stored as given and must be plain Python values.

    Parameters
    ----------
    half : bool
        Store floating-point tensors as float16 (half the size, for shipping); `load_checkpoint`
        converts them back to float32.

    Returns
    -------
    The path written.
    """
    path = Path(path)
    meta = _check_plain(dict(metadata or {}), "metadata")
    meta.update(format_version=FORMAT_VERSION, hydrapick_version=__version__,
                model_config=to_dict(model.config), heads=list(model.head_names))
    meta.setdefault("created", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if half and tensor.is_floating_point():
            if tensor.numel() and float(tensor.abs().max()) > torch.finfo(torch.float16).max:
                raise ValueError(f"cannot save {name} as float16: values exceed its range; use half=False")
            tensor = tensor.to(torch.float16)
        state[name] = tensor.clone()
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION,
               "dtype": "float16" if half else "float32", "state_dict": state, "metadata": meta}
    save_torch(payload, path)
    return path


def _check_torch_file(path: Path) -> None:
    """Raise `CheckpointError` naming what ``path`` is when it is no PyTorch file at all (a micrograph
    given as the model, say), before torch's message about unsafe objects could suggest malice."""
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc.strerror or exc})") from None
    # torch.save writes a zip archive; files of torch < 1.6 start with a pickle protocol byte.
    if head.startswith(b"PK\x03\x04") or head.startswith(b"\x80"):
        return
    if head[208:212] == b"MAP " or path.name.lower().endswith((".mrc", ".mrcs")):
        what = "an MRC micrograph"
    elif not head:
        what = "an empty file"
    else:
        what = "not a PyTorch file"
    raise CheckpointError(f"{path}: not a hydrapick checkpoint: it is {what}; give the model's .pt file "
                          "(--model), or leave it out for the bundled model")


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checked raw payload of a checkpoint (``state_dict``, ``metadata``, ...); see module doc.

    Raises
    ------
    CheckpointError
        Missing/unreadable file, not a hydrapick checkpoint, or a newer format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    _check_torch_file(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or damaged files
        text = str(exc).strip()
        if "weights_only" in text.lower().replace(" ", "_"):
            # torch's own message advises weights_only=False, which would run the file's code: never say so.
            raise CheckpointError(f"{path}: not a hydrapick checkpoint: it holds Python objects other than "
                                  "tensors and plain data, which hydrapick never loads (they could run "
                                  "code); use a checkpoint written by hydrapick") from None
        reason = text.splitlines()[0] if text else type(exc).__name__
        raise CheckpointError(f"{path}: not a hydrapick checkpoint (torch.load failed: {reason[:200]})"
                              ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a hydrapick checkpoint (no '{FORMAT}' marker)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: damaged hydrapick checkpoint (format_version {version!r})")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {version} is newer than this hydrapick "
                              f"{__version__} reads (<= {FORMAT_VERSION}); upgrade hydrapick")
    for key, kind in (("state_dict", dict), ("metadata", dict)):
        if not isinstance(payload.get(key), kind):
            raise CheckpointError(f"{path}: damaged hydrapick checkpoint (no {key})")
    return payload


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[HydraPicker, dict[str, Any]]:
    """Rebuild the model saved at ``path``.

    Returns
    -------
    model : HydraPicker
        float32, in eval mode, on ``map_location`` when that names a device.
    metadata : dict
        As saved (plain Python values).

    Raises
    ------
    CheckpointError
        Not a hydrapick checkpoint, incompatible format version, or weights that do not fit the
        stored configuration.
    """
    payload = read_checkpoint(path, map_location=map_location)
    meta = payload["metadata"]
    try:
        config = from_dict(ModelConfig, meta["model_config"], where=f"{path}: model_config")
        # A head's own body blocks (fine-tuned with train_body_blocks) are told by its weights' names.
        model = HydraPicker(config, [h for h in meta.get("heads", []) if h != GENERIC_HEAD],
                            body_tails=body_tails_in(payload["state_dict"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model ({exc})") from exc
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in payload["state_dict"].items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise CheckpointError(f"{path}: weights do not fit the stored model configuration "
                              f"({' '.join(first[:2])[:300]})") from exc
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: damaged weights (non-finite values in {bad[0]})")
    if isinstance(map_location, str | torch.device):
        model.to(map_location)
    model.eval()
    return model, meta


def load_model(path: str | os.PathLike | None = None, map_location: str | torch.device = "cpu",
               ) -> tuple[HydraPicker, dict[str, Any]]:
    """Load a checkpoint to pick with: the bundled generic model when ``path`` is None.

    Returns
    -------
    (model, metadata)
        The `HydraPicker` in eval mode and the checkpoint's metadata (thresholds, diameters_A,
        model_config, heads, ...).

    Raises
    ------
    CheckpointError
        Missing or unreadable checkpoint, including a missing bundled model.
    """
    if path is None:
        ref = importlib.resources.files("hydrapick") / "weights" / BUNDLED_MODEL
        if not ref.is_file():
            raise CheckpointError(
                f"the bundled generic model (hydrapick/weights/{BUNDLED_MODEL}) is not part of this "
                "installation; pass a checkpoint with --model FILE (model= in Python)")
        with importlib.resources.as_file(ref) as file:
            model, metadata = load_checkpoint(file, map_location=map_location)
    else:
        model, metadata = load_checkpoint(path, map_location=map_location)
    model.eval()
    return model, dict(metadata or {})
