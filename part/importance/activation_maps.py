"""Batched class activation maps: GradCAM, XGradCAM and LayerCAM.

`cam` runs ONE forward and ONE backward for the whole batch on the tensors' device. In eval mode
the images of a batch are independent, so the gradient of the *sum* of the selected logits with
respect to the hooked activation is, slice by slice, each image's own gradient. Everything is
vectorised over the batch and never syncs with the host. `part.importance.mask_rules` turns the
maps into
importance masks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from part.errors import PartError

__all__ = ["CAM_METHODS", "CamError", "cam", "check_choice", "describe"]

CAM_METHODS = ("gradcam", "xgradcam", "layercam")

# torchcam's constants, so that our maps equal its maps to float rounding.
_XGRADCAM_EPS = 1e-8
_NORMALISE_EPS = 1e-8


class CamError(PartError):
    """Bad input to the CAM or mask functions."""


# --------------------------------------------------------------------------------------------
# CAM
# --------------------------------------------------------------------------------------------


def cam(
    model: nn.Module,
    x: Tensor,
    method: str = "gradcam",
    *,
    layer: str | None = None,
    class_idx: Tensor | None = None,
) -> Tensor:
    """Class activation maps of a batch: [B, 1, h, w] in [0, 1] per image, at the layer's size.

    The map is for each image's predicted class, or for ``class_idx[b]`` when given (int tensor
    [B] of valid classes; not range-checked, as that would sync with the device). The result is
    detached, float32 (float64 for a float64 model) and on x's device. ``layer`` is a dotted
    submodule name, by default ``model.cam_layer``. The model must be in eval mode (BatchNorm in
    train mode would mix the images of a batch and update its running statistics); its mode is
    not switched, its parameters' ``.grad`` are not touched, and the hook is always removed.

    Definitions (torchcam's, including its eps): with activation A [B,K,h,w] and gradient G of the
    selected logit w.r.t. A,

    * gradcam:  w_k = mean_{ij} G_k;                       map = relu(sum_k w_k A_k)
    * xgradcam: w_k = sum_{ij} G_k A_k / (sum_{ij} A_k + 1e-8);  map = relu(sum_k w_k A_k)
    * layercam: map = relu(sum_k relu(G_k) * A_k)

    then per image ``(map - min) / (max(map - min) + 1e-8)``, so a constant map becomes zeros.
    When the CAM layer feeds global average pooling and a linear layer (the ResNets here), G is
    constant over space and gradcam and xgradcam coincide.
    """
    check_choice(method, CAM_METHODS, "method")
    if not isinstance(model, nn.Module):
        raise CamError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        raise CamError(
            "pass the wrapped model (model.module) to cam(), not the DataParallel/DDP wrapper: "
            "CAMs need no gradient synchronisation"
        )
    if model.training:
        raise CamError(
            "model is in train mode; call model.eval() before cam() (BatchNorm in train mode "
            "mixes the images of a batch and updates its running statistics)"
        )
    if not isinstance(x, Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise CamError(f"x must be a float tensor [B, C, H, W], got {describe(x)}")
    if torch.is_inference_mode_enabled():
        raise CamError("cam() needs autograd; call it outside torch.inference_mode()")

    module = _resolve_layer(model, layer)
    with torch.enable_grad():  # callers often hold torch.no_grad() around evaluation code
        activation, logits = _forward_with_detached_layer(model, x, module)
        target = _target_classes(logits, class_idx)
        selected = logits.gather(1, target[:, None]).sum()
        try:
            (gradient,) = torch.autograd.grad(selected, activation)
        except RuntimeError as err:
            raise CamError(
                "the logits do not depend on the CAM layer's output; pick a layer on the path "
                "from input to logits (layer=... or model.cam_layer)"
            ) from err
    # Half-precision activations (autocast) would turn the 1e-8 eps into 0: use >= float32.
    dtype = torch.promote_types(activation.dtype, torch.float32)
    with torch.no_grad():
        maps = _combine(method, activation.detach().to(dtype), gradient.to(dtype))
        return _normalise_per_image(maps)[:, None]


def _resolve_layer(model: nn.Module, layer: str | None) -> nn.Module:
    name = layer if layer is not None else getattr(model, "cam_layer", None)
    if not isinstance(name, str) or not name:
        raise CamError(
            "no CAM layer: pass layer='<dotted submodule name>' or give the model a `cam_layer` "
            "attribute (part.models.build_model sets it)"
        )
    try:
        return model.get_submodule(name)
    except AttributeError as err:
        children = ", ".join(n for n, _ in model.named_children())
        raise CamError(
            f"model has no submodule {name!r}; use a dotted name from model.named_modules() "
            f"(top-level children: {children})"
        ) from err


def _forward_with_detached_layer(
    model: nn.Module, x: Tensor, module: nn.Module
) -> tuple[Tensor, Tensor]:
    """Forward pass whose graph starts at `module`'s output.

    The hook swaps the layer's output for a detached leaf (plus a clone, so in-place ops further
    down stay legal). The backward therefore stops at the CAM layer: it is cheap, works for frozen
    parameters, and cannot reach any parameter's .grad.
    """
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Tensor:
        if not isinstance(output, Tensor) or output.ndim != 4:
            raise CamError(
                f"the CAM layer must output a feature map [B, K, h, w], got {describe(output)}; "
                "choose a convolutional block"
            )
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf.clone()

    handle = module.register_forward_hook(hook)
    try:
        logits = model(x)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise CamError(
            f"the CAM layer ran {len(captured)} times in one forward pass; choose a layer that "
            "runs exactly once"
        )
    if not isinstance(logits, Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        raise CamError(f"the model must return logits [B, classes], got {describe(logits)}")
    return captured[0], logits


def _target_classes(logits: Tensor, class_idx: Tensor | None) -> Tensor:
    if class_idx is None:
        return logits.detach().argmax(1)
    if (
        not isinstance(class_idx, Tensor)
        or class_idx.shape != (logits.shape[0],)
        or class_idx.is_floating_point()
        or class_idx.dtype == torch.bool
    ):
        raise CamError(
            f"class_idx must be an integer tensor of shape [{logits.shape[0]}] (one class per "
            f"image), got {describe(class_idx)}"
        )
    return class_idx.to(device=logits.device, dtype=torch.long)


def _combine(method: str, activation: Tensor, gradient: Tensor) -> Tensor:
    """Weighted channel sum -> [B, h, w], followed by ReLU (as torchcam)."""
    if method == "gradcam":
        weights = gradient.flatten(2).mean(-1)[..., None, None]
    elif method == "xgradcam":
        numerator = (gradient * activation).flatten(2).sum(-1)
        denominator = activation.flatten(2).sum(-1).add(_XGRADCAM_EPS)
        weights = (numerator / denominator)[..., None, None]
    else:  # layercam
        weights = torch.relu(gradient)
    return torch.relu(torch.nansum(weights * activation, dim=1))


def _normalise_per_image(maps: Tensor) -> Tensor:
    maps = maps - maps.amin(dim=(-2, -1), keepdim=True)
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + _NORMALISE_EPS)


# --------------------------------------------------------------------------------------------
# validation helpers, shared with part.importance.mask_rules
# --------------------------------------------------------------------------------------------


def check_choice(value: Any, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise CamError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")


def describe(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__

