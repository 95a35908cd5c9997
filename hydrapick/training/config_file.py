"""A training run's settings from a TOML file of [train] and [model] tables (``hydrapick train --config``)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Any

from ..config import ModelConfig, TrainConfig, from_dict, to_dict


def read_config_file(config_file: str | os.PathLike | None, architecture: str | None = None,
                     overrides: Mapping[str, Any] | None = None) -> tuple[TrainConfig, ModelConfig]:
    """TrainConfig and ModelConfig from an optional TOML file, a preset and overrides of [train] keys.

    Raises ValueError for an unreadable file, tables other than [train] and [model], or bad keys.
    """
    raw: dict = {}
    if config_file:
        try:
            with open(config_file, "rb") as f:
                raw = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"{config_file}: cannot read the config ({exc})") from None
        unknown = sorted(set(raw) - {"train", "model"})
        if unknown:
            raise ValueError(f"{config_file}: unknown table(s) {', '.join(unknown)}; "
                             "expected [train] and [model]")
    model_raw = dict(raw.get("model", {}))
    preset = architecture or model_raw.pop("preset", "thesis")
    if preset not in ("thesis", "light"):
        raise ValueError(f"{config_file}: [model] preset must be 'thesis' or 'light'")
    try:
        train_config = from_dict(TrainConfig, {**raw.get("train", {}), **(overrides or {})},
                                 where=f"{config_file or 'options'} [train]")
        base = ModelConfig.light() if preset == "light" else ModelConfig.thesis()
        model_config = from_dict(ModelConfig, {**to_dict(base), **model_raw},
                                 where=f"{config_file or 'options'} [model]")
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    return train_config, model_config
