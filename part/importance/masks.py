"""Importance masks for a whole data set, keyed by sample index, and their file format."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor, nn

from part import __version__
from part.errors import PartError
from part.importance.activation_maps import cam
from part.importance.mask_rules import budget_map, importance_mask
from part.io.atomic import WriteError
from part.io.tensorfile import write_safetensors
from part.models.eval_mode import eval_mode

MASK_FORMAT = "part-masks/1"


class MaskFileError(PartError):
    pass


@dataclass(frozen=True)
class MaskSettings:
    method: str  # gradcam | xgradcam | layercam
    rule: str  # official | quantile
    quantile: float = 0.5
    batch_size: int = 256
    alignment: str = "sample"  # sample | paper: see part/importance/variants.py,
    # `paper_position_masks`

    def rule_args(self) -> dict[str, float]:
        return {"q": self.quantile} if self.rule == "quantile" else {}


def compute_masks(model: nn.Module, images: Tensor, settings: MaskSettings) -> Tensor:
    """bool [N, c, H, W] for uint8 images [N, C, H, W], in their order, model in eval mode."""
    chunks = []
    with eval_mode(model):
        for start in range(0, images.shape[0], settings.batch_size):
            x = images[start:start + settings.batch_size].float().div_(255)
            maps = cam(model, x, method=settings.method)
            chunks.append(importance_mask(maps, tuple(x.shape[1:]), rule=settings.rule,
                                          **settings.rule_args()))
    return torch.cat(chunks)


def unimportant_budget(model: nn.Module, x: Tensor, eps: float, settings: MaskSettings) -> Tensor:
    """eps on the elements the model's own CAM (by `settings`) calls unimportant, 0 on the
    important ones: the budget of the attack on what PART trains with eps_low."""
    maps = cam(model, x, method=settings.method)
    important = importance_mask(maps, tuple(x.shape[1:]), rule=settings.rule,
                                **settings.rule_args())
    return budget_map(important, 0.0, eps)


def save_masks(path: str | Path, masks: Tensor, settings: MaskSettings, source: str) -> Path:
    """Atomic write: a reader never sees half a file, and an old file survives a failed write."""
    metadata = {
        "format": MASK_FORMAT,
        "cam": settings.method,
        "mask_rule": settings.rule,
        "quantile": json.dumps(settings.quantile),
        "source_model": source,
        "important_fraction": json.dumps(float(masks.float().mean())),
        "part_version": __version__,
    }
    try:
        return write_safetensors(path, {"masks": masks}, metadata)
    except WriteError:  # already names the file and the fix
        raise
    except OSError as error:
        raise MaskFileError(f"cannot write masks to {path}: {error}; check free disk space and "
                            "permissions") from None


def load_masks(path: str | Path, expected_shape: tuple[int, ...] | None = None) -> Tensor:
    path = Path(path)
    if not path.is_file():
        raise MaskFileError(f"{path}: no masks file; run `dvc repro masks` to compute it")
    try:
        masks = load_file(str(path))["masks"]
    except (SafetensorError, KeyError, OSError) as error:
        raise MaskFileError(
            f"{path}: not a readable masks file ({error}); delete it and run `dvc repro masks`"
        ) from None
    if masks.dtype != torch.bool or masks.dim() != 4:
        raise MaskFileError(f"{path}: expected a bool tensor [N,c,H,W], got {masks.dtype} "
                            f"{list(masks.shape)}; run `dvc repro masks`")
    if expected_shape is not None:
        n, channels, height, width = expected_shape
        if (masks.shape[0] != n or masks.shape[2:] != (height, width)
                or masks.shape[1] not in (1, channels)):
            raise MaskFileError(
                f"{path}: masks {list(masks.shape)} do not fit the training set "
                f"[{n}, {channels}, {height}, {width}]; rerun `dvc repro masks` after `prepare`"
            )
    return masks
