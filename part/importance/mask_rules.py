"""PART's importance-mask rules: from class activation maps to boolean masks, and from masks to
per-element PGD budgets (`budget_map`, the one place a budget map is built).

* ``official`` -- the paper code's rule, reproduced exactly: PIL-bicubic upsampling (a = -0.5) on
  float32, squaring, matplotlib's 256-entry ``jet`` table, one z-score over the three colour
  planes of each image, important where z > 1. One mask plane per colour channel.
* ``quantile`` -- the top ``q`` fraction of pixels by (PIL-bicubic upsampled) CAM value, one plane
  shared by all channels; exactly ``round(q * H * W)`` pixels per image.

Everything is vectorised over the batch and never syncs with the host.
"""

from __future__ import annotations

import bisect
import math
from functools import lru_cache
from typing import Any

import torch
from torch import Tensor

from part.importance.activation_maps import CamError, check_choice, describe

__all__ = ["MASK_RULES", "budget_map", "importance_mask", "jet_colors", "jet_table",
           "pil_bicubic_resize"]

MASK_RULES = ("official", "quantile")

# PIL's bicubic kernel: Keys' cubic convolution with a = -0.5 and support 2 (Resample.c).
_PIL_BICUBIC_A = -0.5
_PIL_BICUBIC_SUPPORT = 2.0

# matplotlib's `jet` (matplotlib/_cm.py): per channel, (x, y_below, y_above) break points.
_JET_SEGMENTS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "red": ((0.0, 0, 0), (0.35, 0, 0), (0.66, 1, 1), (0.89, 1, 1), (1.0, 0.5, 0.5)),
    "green": (
        (0.0, 0, 0),
        (0.125, 0, 0),
        (0.375, 1, 1),
        (0.64, 1, 1),
        (0.91, 0, 0),
        (1.0, 0, 0),
    ),
    "blue": ((0.0, 0.5, 0.5), (0.11, 1, 1), (0.34, 1, 1), (0.65, 0, 0), (1.0, 0, 0)),
}
_JET_N = 256  # matplotlib's default lookup-table size (rcParams["image.lut"])

_DEFAULT_QUANTILE = 0.5


# --------------------------------------------------------------------------------------------
# PIL-exact bicubic resampling
# --------------------------------------------------------------------------------------------


def _pil_bicubic_kernel(t: float) -> float:
    a = _PIL_BICUBIC_A
    t = abs(t)
    if t < 1.0:
        return ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    if t < 2.0:
        return (((t - 5.0) * t + 8.0) * t - 4.0) * a
    return 0.0


@lru_cache(maxsize=64)
def _pil_weights_cpu(in_size: int, out_size: int) -> Tensor:
    """[out_size, in_size] float64 matrix of PIL's `precompute_coeffs` for BICUBIC.

    Mirrors Pillow's Resample.c: source centre (i + 0.5) * scale, kernel stretched by the scale
    when downsampling, taps rounded to [int(c - support + 0.5), int(c + support + 0.5)) and
    clipped to the image, weights renormalised to sum to one (this is PIL's edge handling).
    """
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = _PIL_BICUBIC_SUPPORT * filter_scale
    inverse_scale = 1.0 / filter_scale  # PIL multiplies by the inverse; keep its rounding
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    for out_index in range(out_size):
        centre = (out_index + 0.5) * scale
        first = max(int(centre - support + 0.5), 0)
        stop = min(int(centre + support + 0.5), in_size)
        taps = [
            _pil_bicubic_kernel((src - centre + 0.5) * inverse_scale) for src in range(first, stop)
        ]
        total = 0.0
        for tap in taps:  # PIL sums in this order; keep it for bit-exact weights
            total += tap
        for offset, tap in enumerate(taps):
            matrix[out_index, first + offset] = tap / total if total != 0.0 else tap
    return matrix


@lru_cache(maxsize=64)
def _pil_weights(in_size: int, out_size: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    return _pil_weights_cpu(in_size, out_size).to(device=device, dtype=dtype)


def _exact_dtype(device: torch.device) -> torch.dtype:
    # PIL accumulates in double; MPS has no float64, where float32 is the best we can do.
    return torch.float32 if device.type == "mps" else torch.float64


def pil_bicubic_resize(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize float maps [..., h, w] to ``size = (H, W)`` exactly as PIL's BICUBIC on mode 'F'.

    PIL resamples horizontally into a float32 intermediate, then vertically, each output value
    accumulated in double over the source taps in ascending order. We do the same, vectorised
    over the batch and all outputs (the loop runs over the few source taps), with the weight
    matrices cached per size and device; the result equals PIL's bit for bit (tested). Unlike
    ``F.interpolate(mode="bicubic")`` (a = -0.75, no renormalisation at the borders) this is
    what the paper code's ``Image.resize(..., BICUBIC)`` computes.
    """
    if not isinstance(maps, Tensor) or maps.ndim < 2 or not maps.is_floating_point():
        raise CamError(f"maps must be a float tensor [..., h, w], got {describe(maps)}")
    out_h, out_w = _check_size(size)
    in_h, in_w = maps.shape[-2:]
    dtype = _exact_dtype(maps.device)
    rows = _pil_weights(in_h, out_h, maps.device, dtype)
    cols = _pil_weights(in_w, out_w, maps.device, dtype)
    source = maps.to(torch.float32).to(dtype)
    horizontal = _resample_last_dim(source, cols).to(torch.float32).to(dtype)
    vertical = _resample_last_dim(horizontal.transpose(-1, -2), rows).transpose(-1, -2)
    return vertical.to(torch.float32).contiguous()


def _resample_last_dim(source: Tensor, weights: Tensor) -> Tensor:
    """``source [..., n_in] @ weights.T`` summed tap by tap in PIL's order.

    A matmul sums in another order and then differs from PIL in the last float32 bit for about
    one value in 30,000; separate multiply and add (no fused multiply-add) keep PIL's rounding.
    """
    total = torch.zeros(
        (*source.shape[:-1], weights.shape[0]), dtype=source.dtype, device=source.device
    )
    for tap in range(weights.shape[1]):
        total.add_(source[..., tap : tap + 1] * weights[:, tap])
    return total


# --------------------------------------------------------------------------------------------
# matplotlib's jet colormap without matplotlib
# --------------------------------------------------------------------------------------------


def _lookup_table_column(segments: tuple[tuple[float, float, float], ...]) -> list[float]:
    """One column of matplotlib's `_create_lookup_table(256, segments)`, operation for operation.

    Same IEEE double operations in the same order as numpy's linspace/searchsorted code, so the
    table equals matplotlib's bit for bit (tested).
    """
    n = _JET_N
    xs = [s[0] * (n - 1) for s in segments]
    below = [float(s[1]) for s in segments]
    above = [float(s[2]) for s in segments]
    step = 1.0 / (n - 1)
    grid = [(n - 1) * (i * step) for i in range(n - 1)] + [(n - 1) * 1.0]
    column = [above[0]]
    for value in grid[1:-1]:
        upper = bisect.bisect_left(xs, value)
        distance = (value - xs[upper - 1]) / (xs[upper] - xs[upper - 1])
        column.append(distance * (below[upper] - above[upper - 1]) + above[upper - 1])
    column.append(below[-1])
    return [min(max(v, 0.0), 1.0) for v in column]


def _build_jet_table() -> Tensor:
    columns = [_lookup_table_column(_JET_SEGMENTS[c]) for c in ("red", "green", "blue")]
    return torch.tensor(columns, dtype=torch.float64).T.contiguous()


_JET_TABLE_CPU = _build_jet_table()


def jet_table(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> Tensor:
    """matplotlib's ``colormaps['jet']`` RGB lookup table, [256, 3] (no matplotlib needed)."""
    return _JET_TABLE_CPU.to(device=torch.device(device), dtype=dtype, copy=True)


@lru_cache(maxsize=16)
def _cached_jet_table(device: torch.device, dtype: torch.dtype) -> Tensor:
    return _JET_TABLE_CPU.to(device=device, dtype=dtype)


def jet_colors(values: Tensor) -> Tensor:
    """``colormaps['jet'](values)[..., :3]`` for float32 values: [...] -> [..., 3].

    matplotlib bins a float x to int(x * 256); x == 1 and anything above maps to the last entry
    (jet's over colour is its last entry). Values are expected >= 0 and finite.
    """
    return _cached_jet_table(values.device, _exact_dtype(values.device))[_jet_bins(values)]


def _jet_bins(values: Tensor) -> Tensor:
    return (values.to(torch.float32) * _JET_N).clamp(0, _JET_N - 1).to(torch.long)


@lru_cache(maxsize=16)
def _paper_jet_table(device: torch.device, dtype: torch.dtype) -> Tensor:
    # The paper code round-trips the colours through (255 * x) / 255 in double.
    return (_JET_TABLE_CPU * 255 / 255).to(device=device, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Mask rules
# --------------------------------------------------------------------------------------------


def importance_mask(
    cams: Tensor, image_shape: tuple[int, int, int], rule: str = "official", **rule_args: Any
) -> Tensor:
    """Boolean importance masks [B, C or 1, H, W] from CAMs [B, 1, h, w] (as returned by `cam`).

    ``image_shape`` is (C, H, W) of the images the masks are for.

    Rule ``official`` (no arguments) -- the PART paper code (utils.craft_weight_matrix), exactly:
    the CAM (float32, in [0, 1]) is upsampled to (H, W) with PIL's BICUBIC on a float ('F')
    image, squared in float32, mapped through matplotlib's 256-entry ``jet`` table to RGB,
    standardised with ONE mean and ONE population std (numpy's default, ddof=0) over all
    H x W x 3 values of the image, and an element is important where the z-score, rounded to
    float32 as the paper code does before comparing, is > 1. (In the paper's environment,
    torchvision 0.14, ``to_pil_image`` of a float32 array gives a float image; newer torchvision
    would quantise it to 8 bits first, which is not the published behaviour.)

    * C == 3: one plane per colour channel, [B, 3, H, W]. Each plane marks a different band of
      CAM values, because jet runs blue, green, red and ends in dark red (0.5, 0, 0). Measured
      on a trained small CNN (8x8 GradCAMs, 32x32 synthetic images): red marked CAM values of
      about 0.74-0.97, green 0.54-0.84, blue 0.16-0.64 (5th-95th percentiles); the CAM's own
      peak (values >= 0.98) was marked in no plane for 81 % of those pixels, and the maximum
      pixel never. Fractions marked: R 6 %, G 11 %, B 27 %, 15 % of all elements. This is the
      published behaviour, kept as is; ``quantile`` is the rule that follows the CAM.
    * C == 1 (e.g. Fashion-MNIST): there is no colour channel to pair with the three planes. A
      pixel is important when ANY of its three planes is (union), [B, 1, H, W]: it keeps the
      full budget wherever the paper code keeps it for some channel of that pixel, so it never
      shrinks a budget the RGB rule keeps. In the measurement above this is about
      0.15 < CAM < 0.98 and 35 % of the pixels.
    * A constant CAM (all zeros after normalisation) marks nothing: in the paper code torchcam
      0.3.2 normalised it by 0/0 and the NaN made every z-score comparison false.
    * any other C: CamError.

    Rule ``quantile`` (``q`` in (0, 1], default 0.5): the ``round(q * H * W)`` pixels (Python's
    round, half to even) with the highest upsampled CAM value (same PIL-bicubic upsampling), one
    plane [B, 1, H, W] shared by all channels. Ties go to the earlier pixel in row-major order
    (stable sort), so the count is exact and the result deterministic on every device.
    """
    check_choice(rule, MASK_RULES, "rule")
    channels, height, width = _check_image_shape(image_shape)
    if not isinstance(cams, Tensor) or cams.ndim != 4 or cams.shape[1] != 1:
        raise CamError(
            f"cams must be a tensor [B, 1, h, w] as returned by cam(), got {describe(cams)}"
        )
    if not cams.is_floating_point():
        raise CamError(f"cams must be floating point, got dtype {cams.dtype}")
    if rule == "official":
        _check_rule_args(rule, rule_args, allowed=())
        if channels not in (1, 3):
            raise CamError(
                f"rule 'official' is defined for 3-channel (RGB) and 1-channel images, got "
                f"{channels} channels; use rule='quantile'"
            )
        return _official_mask(cams[:, 0], (height, width), channels)
    _check_rule_args(rule, rule_args, allowed=("q",))
    q = rule_args.get("q", _DEFAULT_QUANTILE)
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < q <= 1.0:
        raise CamError(
            f"rule 'quantile' needs q in (0, 1] (the fraction of important pixels), got q={q!r}"
        )
    return _quantile_mask(pil_bicubic_resize(cams[:, 0], (height, width)), q)


def _official_mask(cams: Tensor, size: tuple[int, int], channels: int) -> Tensor:
    upsampled = pil_bicubic_resize(cams, size)
    bins = _jet_bins(upsampled * upsampled)
    colours = _paper_jet_table(bins.device, _exact_dtype(bins.device))[bins]
    colours = colours.permute(0, 3, 1, 2)  # [B, 3, H, W]
    mean = colours.mean(dim=(1, 2, 3), keepdim=True)
    std = colours.std(dim=(1, 2, 3), keepdim=True, correction=0)
    planes = ((colours - mean) / std).to(torch.float32) > 1
    # The paper's torchcam 0.3.2 normalised a constant CAM by 0/0; the NaN ran through PIL and
    # the colormap (NaN -> "bad" colour, std 0) and no element came out important. Same here.
    informative = cams.flatten(1).amax(1) > cams.flatten(1).amin(1)
    planes &= informative[:, None, None, None]
    return planes if channels == 3 else planes.any(dim=1, keepdim=True)


def _quantile_mask(upsampled: Tensor, q: float) -> Tensor:
    batch, height, width = upsampled.shape
    count = round(q * height * width)
    order = torch.sort(upsampled.reshape(batch, -1), dim=1, descending=True, stable=True).indices
    mask = torch.zeros(batch, height * width, dtype=torch.bool, device=upsampled.device)
    mask.scatter_(1, order[:, :count], True)
    return mask.reshape(batch, 1, height, width)


def budget_map(mask: Tensor, eps: float, eps_low: float) -> Tensor:
    """Per-element PGD budget, float32 with the mask's shape: ``eps`` where important, else
    ``eps_low``. A [B, 1, H, W] mask broadcasts over the image channels in PGD."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise CamError(f"mask must be a bool tensor (from importance_mask), got {describe(mask)}")
    for name, value in (("eps", eps), ("eps_low", eps_low)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (math.isfinite(value) and value >= 0)
        ):
            raise CamError(f"{name} must be a finite number >= 0 (e.g. 8/255), got {value!r}")
    budget = torch.full(mask.shape, float(eps_low), dtype=torch.float32, device=mask.device)
    return budget.masked_fill_(mask, float(eps))


# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _check_rule_args(rule: str, rule_args: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(rule_args) - set(allowed))
    if unknown:
        takes = f"takes only {', '.join(allowed)}" if allowed else "takes no arguments"
        raise CamError(f"rule {rule!r} {takes}; got unexpected {', '.join(unknown)}")


def _check_size(size: Any) -> tuple[int, int]:
    if (
        not isinstance(size, (tuple, list))
        or len(size) != 2
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in size)
    ):
        raise CamError(f"size must be (H, W) with positive ints, got {size!r}")
    return int(size[0]), int(size[1])


def _check_image_shape(image_shape: Any) -> tuple[int, int, int]:
    if (
        not isinstance(image_shape, (tuple, list, torch.Size))
        or len(image_shape) != 3
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in image_shape)
    ):
        raise CamError(f"image_shape must be (C, H, W) with positive ints, got {image_shape!r}")
    return int(image_shape[0]), int(image_shape[1]), int(image_shape[2])
