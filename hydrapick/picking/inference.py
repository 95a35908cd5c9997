"""The network over prepared micrographs: whole, in batches, or in tiles that give the same outputs.

`infer` runs a `hydrapick.model.HydraPicker` head on prepared images (model scale, see
`hydrapick.preprocess.prepare`). The network is fully convolutional, so a micrograph is processed whole
unless it is larger than ``max_tile_px`` at the model's scale or the device runs out of memory. Tiles then
overlap by more than the receptive field and start on multiples of the anchor stride, and GroupNorm
statistics are accumulated over the whole micrograph (one extra partial pass per normalisation layer)
instead of per tile, so tiled and untiled inference give the same outputs up to float rounding.

`infer_symmetrised` is test-time augmentation: it averages the outputs over the 8 rotations and mirror
images of the micrograph (the symmetries of the square grid, under which a micrograph's particles are
equally plausible). The image is padded to ``stride * n + 1`` pixels per side, where every convolution's
sampling grid, and so the anchor grid, maps onto itself under these transforms; each transformed output
is mapped back (positions and offset vectors) before the logits and offsets are averaged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

log = logging.getLogger(__name__)


def receptive_field_px(model: nn.Module, head: str = "generic") -> int:
    """Receptive field (input pixels) of one anchor output: an upper bound from the convolutions in order.

    Shortcut branches are counted as if in series, which can only overestimate it.
    """
    modules = list(model.body.modules()) + list(model.heads[head].modules())  # type: ignore[attr-defined]
    rf, jump = 1, 1
    for m in modules:
        if isinstance(m, nn.Conv2d):
            k = max(m.kernel_size)
            d = max(m.dilation) if isinstance(m.dilation, tuple) else m.dilation
            s = max(m.stride)
            rf += (k - 1) * d * jump
            jump *= s
    return rf


def tile_margin_px(model: nn.Module, head: str = "generic") -> int:
    """Context kept on each side of a tile: half the receptive field plus one stride, in whole strides.

    Adjacent tiles then overlap by at least the receptive field, so every output a tile keeps sees only
    real image, never the tile's own zero padding.
    """
    stride = model.config.anchor_stride  # type: ignore[attr-defined]
    need = receptive_field_px(model, head) // 2 + stride
    return -(-need // stride) * stride


def tile_spans(length: int, core: int, margin: int) -> list[tuple[int, int, int, int]]:
    """Split ``[0, length)`` into owned spans of ``core`` pixels with windows ``margin`` wider each side.

    Returns ``(window_start, window_stop, own_start, own_stop)`` tuples; owned spans partition the axis.
    """
    spans = []
    for start in range(0, length, core):
        stop = min(length, start + core)
        spans.append((max(0, start - margin), min(length, stop + margin), start, stop))
    return spans


def widest_activation_per_px(model: nn.Module, head: str = "generic") -> float:
    """Values in the network's largest single activation per input pixel (one small forward pass).

    The thesis network's full-resolution 64-channel body gives 64; the bundled light network, whose stem
    has stride 4, 8 (its 128-channel head block at stride 4).
    """
    param = next(model.parameters())
    side = 4 * int(model.config.anchor_stride)  # type: ignore[attr-defined]
    widest = 0

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal widest
        widest = max(widest, output.numel())

    hooks = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(torch.zeros(1, model.config.in_channels, side, side, device=param.device,  # type: ignore
                              dtype=param.dtype), head=head)
    finally:
        for h in hooks:
            h.remove()
    return widest / side**2


def auto_tile_px(model: nn.Module, head: str, budget_bytes: int, bytes_per_value: int = 4) -> int:
    """Largest model-scale side whose widest activation fits ``budget_bytes``, in whole anchor strides."""
    stride = int(model.config.anchor_stride)  # type: ignore[attr-defined]
    side = (budget_bytes / (bytes_per_value * widest_activation_per_px(model, head))) ** 0.5
    return max(stride, int(side) // stride * stride)


class _StopForward(Exception):
    """Raised inside a forward pass once the statistics being collected are complete."""


@contextmanager
def _patched_norms(norms: Sequence[nn.GroupNorm], forwards: Sequence[Callable]) -> Iterator[None]:
    for module, forward in zip(norms, forwards, strict=True):
        module.forward = forward  # instance attribute shadows the class method
    try:
        yield
    finally:
        for module in norms:
            del module.forward


def _group_norm_order(model: nn.Module, head: str, device: torch.device, dtype: torch.dtype,
                      ) -> list[tuple[nn.GroupNorm, int]]:
    """GroupNorm layers in execution order with their stride relative to the input."""
    stride = model.config.anchor_stride  # type: ignore[attr-defined]
    side = 4 * stride
    seen: list[tuple[nn.GroupNorm, int]] = []
    hooks = []
    for m in model.modules():
        if isinstance(m, nn.GroupNorm):
            hooks.append(m.register_forward_pre_hook(
                lambda mod, inp: seen.append((mod, side // int(inp[0].shape[-1])))))
    try:
        with torch.no_grad():
            model(torch.zeros(1, model.config.in_channels, side, side, device=device, dtype=dtype),  # type: ignore
                  head=head)
    finally:
        for h in hooks:
            h.remove()
    if len({id(m) for m, _ in seen}) != len(seen):
        raise RuntimeError("a GroupNorm layer runs more than once per forward pass; tiled inference "
                           "cannot reproduce whole-micrograph statistics for this network")
    return seen


def _own_region(ys: tuple[int, int, int, int], xs: tuple[int, int, int, int], stride: int,
                ) -> tuple[slice, slice]:
    """Rows/cols of a tile's stride-``stride`` feature map whose centres fall in the span the tile owns."""
    (wy0, _, oy0, oy1), (wx0, _, ox0, ox1) = ys, xs
    return (slice((oy0 - wy0) // stride, -(-(oy1 - wy0) // stride)),
            slice((ox0 - wx0) // stride, -(-(ox1 - wx0) // stride)))


class _NormWithStats:
    """GroupNorm forward that uses given whole-image statistics instead of the tile's own."""

    def __init__(self, module: nn.GroupNorm) -> None:
        self.module = module
        self.mean: torch.Tensor | None = None
        self.rstd: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m, g = self.module, self.module.num_groups
        n, c, h, w = x.shape
        # (N, C, h, w) -> (N, G, C/G, h, w): the statistics are per group.
        xg = x.float().reshape(n, g, c // g, h, w)
        y = ((xg - self.mean.view(1, g, 1, 1, 1)) * self.rstd.view(1, g, 1, 1, 1)).reshape(n, c, h, w)
        if m.affine:
            y = y * m.weight.float().view(1, c, 1, 1) + m.bias.float().view(1, c, 1, 1)
        return y


class _NormCollector:
    """GroupNorm forward that sums its input over the tile's owned region, then stops the pass."""

    def __init__(self, module: nn.GroupNorm, stride: int, device: torch.device) -> None:
        self.groups, self.stride = module.num_groups, stride
        self.total = torch.zeros(self.groups, dtype=torch.float64, device=device)
        self.total_sq = torch.zeros_like(self.total)
        self.count = 0
        self.spans: tuple = ()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows, cols = _own_region(*self.spans, self.stride)
        part = x[:, :, rows, cols].double()
        n, c, h, w = part.shape
        # (N, C, h, w) -> (N, G, C/G*h*w)
        part = part.reshape(n, self.groups, -1)
        self.total += part.sum(dim=(0, 2))
        self.total_sq += (part * part).sum(dim=(0, 2))
        self.count += c // self.groups * h * w
        raise _StopForward

    def statistics(self, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self.total / self.count
        var = (self.total_sq / self.count - mean * mean).clamp(min=0)
        return mean.float(), torch.rsqrt(var + eps).float()


def _infer_tiled(model: nn.Module, image: torch.Tensor, head: str, tile_px: int) -> torch.Tensor:
    """Outputs (1, A, 3) of one image (1, C, H, W), computed tile by tile with whole-image statistics."""
    stride = model.config.anchor_stride  # type: ignore[attr-defined]
    _, _, height, width = image.shape
    margin = tile_margin_px(model, head)
    core = max(stride, (tile_px - 2 * margin) // stride * stride)
    tiles = [(ys, xs) for ys in tile_spans(height, core, margin) for xs in tile_spans(width, core, margin)]
    norms = _group_norm_order(model, head, image.device, image.dtype)
    modules = [m for m, _ in norms]
    fixed = [_NormWithStats(m) for m in modules]
    log.debug("tiled inference: %dx%d in %d tiles of <= %d px, margin %d px, %d GroupNorm passes",
              height, width, len(tiles), core + 2 * margin, margin, len(norms))

    def window(ys, xs):
        return image[:, :, ys[0]:ys[1], xs[0]:xs[1]]

    # One pass per GroupNorm layer: the layers before it use the whole-image statistics found so far,
    # the layer itself sums its input over the region each tile owns, and the pass stops there.
    for k, (module, s) in enumerate(norms):
        collector = _NormCollector(module, s, image.device)
        with _patched_norms(modules, [*fixed[:k], collector, *fixed[k + 1:]]), torch.no_grad():
            for ys, xs in tiles:
                collector.spans = (ys, xs)
                try:
                    model(window(ys, xs), head=head)
                except _StopForward:
                    pass
        fixed[k].mean, fixed[k].rstd = collector.statistics(module.eps)

    ha, wa = -(-height // stride), -(-width // stride)
    out: torch.Tensor | None = None
    with _patched_norms(modules, fixed), torch.no_grad():
        for ys, xs in tiles:
            tile_out = model(window(ys, xs), head=head)
            th, tw = -(-(ys[1] - ys[0]) // stride), -(-(xs[1] - xs[0]) // stride)
            # (1, th*tw, 3) -> (th, tw, 3): the tile's anchor grid, of which the owned anchors are kept.
            grid = tile_out.reshape(th, tw, -1)
            if out is None:
                out = torch.empty((ha, wa, grid.shape[-1]), dtype=grid.dtype, device=grid.device)
            rows, cols = _own_region(ys, xs, stride)
            out[ys[2] // stride:-(-ys[3] // stride), xs[2] // stride:-(-xs[3] // stride)] = grid[rows, cols]
    assert out is not None
    return out.reshape(1, ha * wa, -1)


def infer(model: nn.Module, images: torch.Tensor, head: str = "generic", *,
          max_tile_px: int | None = None) -> torch.Tensor:
    """Raw outputs (N, A, 3) for prepared images (N, 1, H, W) on the model's device.

    Whole images are processed at once unless a side exceeds ``max_tile_px`` (model pixels), in which
    case each image is processed in overlapping tiles that give the same outputs (see module docstring).
    Out-of-memory errors fall back to single images, then to ever smaller tiles.
    """
    height, width = images.shape[-2:]
    tile_px = max_tile_px
    while True:
        try:
            if tile_px is None or max(height, width) <= tile_px:
                with torch.no_grad():
                    return model(images, head=head)
            return torch.cat([_infer_tiled(model, images[i:i + 1], head, tile_px)
                              for i in range(images.shape[0])])
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_oom(exc):
                raise
            if images.device.type == "cuda":
                torch.cuda.empty_cache()
            if images.shape[0] > 1:
                log.info("out of memory on a batch of %d; picking one micrograph at a time", images.shape[0])
                return torch.cat([infer(model, images[i:i + 1], head, max_tile_px=max_tile_px)
                                  for i in range(images.shape[0])])
            smaller = (tile_px or max(height, width)) // 2
            if smaller < 4 * tile_margin_px(model, head):
                raise
            log.info("out of memory on a %dx%d micrograph; tiles of %d px", height, width, smaller)
            tile_px = smaller


# The 8 symmetries of the square grid as (quarter turns, mirror): the image is mirrored left-right first,
# then turned by torch.rot90(k, dims=(-2, -1)).
SYMMETRIES: tuple[tuple[int, bool], ...] = tuple((k, mirror) for mirror in (False, True) for k in range(4))


def transform_image(images: torch.Tensor, k: int, mirror: bool) -> torch.Tensor:
    """Images (..., H, W) mirrored left-right (if ``mirror``), then turned ``k`` quarter turns."""
    if mirror:
        images = images.flip(-1)
    return torch.rot90(images, k, dims=(-2, -1))


def untransform_grid(grid: torch.Tensor, k: int, mirror: bool) -> torch.Tensor:
    """Map an output grid (N, Ha, Wa, 3) of [dx, dy, logit] of a transformed image back to the original.

    Grid positions are moved back by the inverse transform, and the offset vectors (dx, dy) are turned
    and mirrored back with them. Exact when the anchor grid maps onto itself (see `infer_symmetrised`).
    """
    grid = torch.rot90(grid, -k, dims=(1, 2))
    dx, dy = grid[..., 0], grid[..., 1]
    for _ in range(k % 4):
        # torch.rot90 by one quarter turn sends a displacement (dx, dy) to (dy, -dx); undo it.
        dx, dy = -dy, dx
    if mirror:
        dx, dy = -dx.flip(2), dy.flip(2)
        logit = grid[..., 2].flip(2)
    else:
        logit = grid[..., 2]
    return torch.stack([dx, dy, logit], dim=-1)


def infer_symmetrised(model: nn.Module, images: torch.Tensor, head: str = "generic", *,
                      max_tile_px: int | None = None,
                      symmetries: Sequence[tuple[int, bool]] = SYMMETRIES) -> torch.Tensor:
    """Raw outputs (N, A, 3) like `infer`, averaged over rotated and mirrored copies of the images.

    Logits and offsets are averaged (after mapping each copy's outputs back), so the result decodes like
    `infer`'s. Costs one forward pass per symmetry (8 by default).
    """
    from ..model.anchors import grid_shape

    cfg = model.config  # type: ignore[attr-defined]
    stride = int(cfg.anchor_stride)
    n, _, height, width = images.shape
    # Sides of stride * m + 1 pixels: every stride-s convolution (3x3, padding 1) then samples positions
    # 0, s, 2s, ... up to the last pixel, a grid that mirrors and turns onto itself.
    padded_h = -(-(height - 1) // stride) * stride + 1
    padded_w = -(-(width - 1) // stride) * stride + 1
    padded = torch.nn.functional.pad(images, (0, padded_w - width, 0, padded_h - height))
    ha, wa = grid_shape(height, width, cfg)
    total: torch.Tensor | None = None
    for k, mirror in symmetries:
        x = transform_image(padded, k, mirror)
        gh, gw = grid_shape(x.shape[-2], x.shape[-1], cfg)
        out = infer(model, x.contiguous(), head, max_tile_px=max_tile_px).float().reshape(n, gh, gw, -1)
        back = untransform_grid(out, k, mirror)[:, :ha, :wa]
        total = back if total is None else total + back
    assert total is not None
    return (total / len(symmetries)).reshape(n, ha * wa, -1)


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in text or "can't allocate" in text
