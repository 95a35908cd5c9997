"""HydraPicker: one shared body, any number of named dataset heads, and the generic head.

Thesis ch. 3.2 / Fig. 3.3: each training micrograph goes through the body and the head of its own
dataset; the generic head is never run on training data but is pulled towards the dataset heads by the
bias loss (`hydrapick.losses.bias_loss`) and is the head used on unseen specimens.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..config import ModelConfig
from .body import Body
from .head import Head

GENERIC_HEAD = "generic"

# ModuleDict keys become state-dict key components, so dots (the key separator) are not allowed.
_HEAD_NAME = re.compile(r"^[A-Za-z0-9_\-+]+$")
_TAIL_KEY = re.compile(r"^heads\.([^.]+)\.body_tail\.(\d+)\.")


def check_head_name(name: str) -> str:
    """Return ``name`` if it can name a head, else raise ValueError saying why."""
    if not isinstance(name, str) or not _HEAD_NAME.match(name):
        raise ValueError(f"head name {name!r} is not allowed: use letters, digits, '_', '-' or '+' "
                         "(no dots or spaces)")
    return name


class HydraPicker(nn.Module):
    """The multi-head particle picker.

    Parameters
    ----------
    config : ModelConfig
        Network shape and scale.
    heads : sequence of str
        Dataset head names, in order. The generic head ("generic") always exists and is not listed.

    Attributes
    ----------
    config : ModelConfig
    body : Body
    heads : nn.ModuleDict
        Every head, the generic one included.
    head_names : list of str
        Dataset heads in order (generic excluded).
    """

    def __init__(self, config: ModelConfig, heads: Sequence[str] = (),
                 body_tails: Mapping[str, int] | None = None) -> None:
        super().__init__()
        if isinstance(heads, str):
            raise TypeError("heads must be a sequence of head names, not a single string")
        self.config = config
        self.body = Body(config)
        self.heads = nn.ModuleDict({GENERIC_HEAD: Head(config)})
        self.head_names: list[str] = []
        tails = dict(body_tails or {})
        for name in heads:
            self.add_head(name, init_from=None, body_tail_blocks=tails.pop(name, 0))
        if tails:
            raise ValueError(f"body tails given for heads the model lacks: {', '.join(sorted(tails))}")

    def features(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Shared body features after ``depth`` residual blocks (None: all).

        ``x`` (N, in_channels, H, W) float -> (N, body_channels, h, w).
        """
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected input of shape (N, {self.config.in_channels}, H, W), "
                             f"got {tuple(x.shape)}")
        return self.body(x, depth)

    def head_depth(self, head: str = GENERIC_HEAD) -> int:
        """How many of the shared body's residual blocks head ``head`` reads after: all of them, less
        the blocks its own `Head.body_tail` replaces."""
        return self.config.body_blocks - len(self._head(head).body_tail)

    def head_forward(self, features: torch.Tensor, head: str = GENERIC_HEAD, start_block: int = 0,
                     depth: int | None = None) -> torch.Tensor:
        """Run one head on body features -> (N, Ha*Wa, 3) raw [dx, dy, logit], anchors row-major.

        ``depth``: the shared body blocks ``features`` have passed (`features` (x, depth); None: all).
        Shared blocks the head reads after are run on them first. With ``start_block`` k the features
        are instead those after the head's tail and first k blocks (`Head.trunk`), and ``depth`` is
        not used.

        Raises
        ------
        ValueError
            ``features`` have passed body blocks that the head replaces with its own tail.
        """
        module = self._head(head)
        if start_block == 0:
            depth = self.config.body_blocks if depth is None else depth
            need = self.head_depth(head)
            if depth > need:
                raise ValueError(f"head {head!r} runs its own copy of the body's last "
                                 f"{len(module.body_tail)} block(s): give it the features after {need} "
                                 f"shared block(s) (model.features(x, depth={need})), not after {depth}")
            features = self.body.resume(features, depth, need)
        return module(features, start_block)

    def forward(self, x: torch.Tensor, head: str = GENERIC_HEAD) -> torch.Tensor:
        """Raw outputs (N, Ha*Wa, 3) = [dx, dy, logit] per anchor for input ``x`` (N, 1, H, W).

        Offsets are in units of ``config.anchor_stride``; decode with `hydrapick.anchors.decode` or
        `hydrapick.anchors.detect`. Anchors are row-major over the (Ha, Wa) grid of
        `hydrapick.anchors.grid_shape`.
        """
        depth = self.head_depth(head)
        return self.head_forward(self.features(x, depth), head, depth=depth)

    def _head(self, name: str) -> Head:
        if name not in self.heads:
            known = ", ".join([GENERIC_HEAD, *self.head_names])
            raise KeyError(f"no head named {name!r}; heads: {known}")
        return self.heads[name]  # type: ignore[return-value]

    def add_head(self, name: str, init_from: str | None = GENERIC_HEAD, body_tail_blocks: int = 0) -> Head:
        """Add a dataset head ``name``, copying the weights of head ``init_from`` (None: fresh init).

        ``body_tail_blocks`` N > 0 gives the head its own copy of the last N body blocks that
        ``init_from`` runs (the shared body's, or the source head's own tail), as `Head.body_tail`. The
        new head is on the same device and dtype as the model. Raises ValueError if it exists or N is
        not 0 to ``config.body_blocks``.
        """
        check_head_name(name)
        if name == GENERIC_HEAD or name in self.heads:
            raise ValueError(f"head {name!r} already exists")
        if not 0 <= body_tail_blocks <= self.config.body_blocks:
            raise ValueError(f"body_tail_blocks must be 0-{self.config.body_blocks} (the body's residual "
                             f"blocks), got {body_tail_blocks}")
        if init_from is None:
            head = Head(self.config)
            ref = next(self.heads[GENERIC_HEAD].parameters())
            head.to(device=ref.device, dtype=ref.dtype)
        else:
            head = copy.deepcopy(self._head(init_from))
        # The blocks ``init_from`` runs, shared ones first; the new tail copies the last N of them.
        source = self._head(init_from if init_from is not None else GENERIC_HEAD).body_tail
        chain = [*self.body.blocks[:self.config.body_blocks - len(source)], *source]
        head.body_tail = copy.deepcopy(nn.Sequential(*chain[len(chain) - body_tail_blocks:]))
        for p in head.parameters():
            p.requires_grad_(True)
        self.heads[name] = head
        self.head_names.append(name)
        return head

    def remove_head(self, name: str) -> None:
        """Remove dataset head ``name`` (the generic head stays)."""
        if name == GENERIC_HEAD or name not in self.heads:
            raise ValueError(f"cannot remove head {name!r}; dataset heads: {self.head_names}")
        del self.heads[name]
        self.head_names.remove(name)

    def freeze_body(self, frozen: bool = True) -> None:
        """Stop (or, with ``frozen=False``, restart) gradient updates of the shared body."""
        for p in self.body.parameters():
            p.requires_grad_(not frozen)

    def freeze_head(self, name: str, frozen: bool = True) -> None:
        """Stop (or restart) gradient updates of head ``name``."""
        for p in self._head(name).parameters():
            p.requires_grad_(not frozen)

    def extra_repr(self) -> str:
        return f"heads={[GENERIC_HEAD, *self.head_names]}"


def body_tails_in(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """The length of each head's `Head.body_tail` in a `HydraPicker` state dict (heads without one
    left out), for rebuilding the model before loading it."""
    tails: dict[str, int] = {}
    for key in state_dict:
        match = _TAIL_KEY.match(key)
        if match:
            tails[match[1]] = max(tails.get(match[1], 0), int(match[2]) + 1)
    return tails
