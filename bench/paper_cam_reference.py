"""A plain re-implementation of the PART paper code's mask procedure, one image at a time.

Mirrors `craft_weight_matrix` / `process_overlay` / `generate_weighted_eps` of the paper's
utils.py (github.com/JiachengZ01/PART), with its pinned environment in mind (torch 1.13,
torchvision 0.14, torchcam 0.3.2, matplotlib 3.7):

* per image: a forward pass, ``scores[:, predicted].backward()`` through the whole model (what
  torchcam 0.3.2 does; it also zeroes the model's .grad first), CAM from the hooked layer,
  normalised by ``(cam - min) / max(cam - min)`` (torchcam 0.3.2 has no eps);
* host side: ``to_pil_image`` of the float32 CAM -- a float ('F') image in torchvision 0.14
  (newer torchvision would quantise a float numpy array to 8 bits: we build the 'F' image
  directly), PIL BICUBIC resize, ``** 2``, matplotlib's ``jet`` colormap, ``255 * rgb`` as
  double then ``/ 255``, one numpy mean / std (ddof=0) over H x W x 3, clamp to [1, max], cast
  to float32, important where > 1.

``matplotlib.cm.get_cmap`` is gone since matplotlib 3.9; ``colormaps['jet']`` is the same map.
This file is the benchmark's baseline and a test oracle; it is deliberately not vectorised.
"""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image
from torch import Tensor, nn

METHODS = ("gradcam", "xgradcam", "layercam")


def paper_mask_from_cam(cam_hw: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """The paper's `process_overlay(...) > 1` for one CAM [h, w] -> bool mask [3, H, W].

    The paper calls ``resize((img_size1, img_size2))`` with (H, W) where PIL expects (W, H); the
    two agree for square images, the only ones it supports. We pass (W, H).
    """
    height, width = image_hw
    cam_image = Image.fromarray(np.asarray(cam_hw, dtype=np.float32))  # mode 'F'
    overlay = cam_image.resize((width, height), resample=Image.BICUBIC)
    coloured = colormaps["jet"](np.asarray(overlay) ** 2)
    rgb = (255 * coloured[:, :, :3]).astype(np.double)
    normalised = rgb / 255
    mean, std = np.mean(normalised), np.std(normalised)
    weight = torch.from_numpy((normalised - mean) / std)
    weight = torch.clamp(weight, 1, weight.max()).float().permute(2, 0, 1)
    return (weight > 1).numpy()


def _paper_cam_one_image(
    model: nn.Module, image: Tensor, module: nn.Module, method: str
) -> np.ndarray:
    store: dict[str, Tensor] = {}

    def forward_hook(_module: nn.Module, _inputs: object, output: Tensor) -> None:
        store["activation"] = output.data
        output.register_hook(lambda grad: store.__setitem__("gradient", grad.data))

    handle = module.register_forward_hook(forward_hook)
    try:
        scores = model(image.unsqueeze(0))
        predicted = scores.argmax().item()
        model.zero_grad()
        scores[:, predicted].sum().backward()
    finally:
        handle.remove()
    activation, gradient = store["activation"], store["gradient"]
    with torch.no_grad():
        if method == "gradcam":
            weights = gradient.flatten(2).mean(-1)[..., None, None]
        elif method == "xgradcam":
            weights = (gradient * activation).flatten(2).sum(-1) / (
                activation.flatten(2).sum(-1) + 1e-8
            )
            weights = weights[..., None, None]
        else:
            weights = torch.relu(gradient)
        cam = torch.relu(torch.nansum(weights * activation, dim=1))
        cam = cam - cam.flatten(1).min(-1).values[:, None, None]
        cam = cam / cam.flatten(1).max(-1).values[:, None, None]
    return cam[0].cpu().numpy()


def paper_masks(
    model: nn.Module, data: Tensor, method: str = "gradcam", layer: str = "layer4"
) -> Tensor:
    """The paper code's importance masks for a batch, bool [B, 3, H, W], one image at a time."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    module = model.get_submodule(layer)
    height, width = data.shape[-2:]
    masks = torch.empty(data.shape[0], 3, height, width, dtype=torch.bool, device=data.device)
    for index in range(data.shape[0]):
        cam_hw = _paper_cam_one_image(model, data[index], module, method)
        masks[index] = torch.from_numpy(paper_mask_from_cam(cam_hw, (height, width)))
    return masks


def paper_weighted_eps(
    model: nn.Module,
    data: Tensor,
    eps: float,
    eps_low: float,
    method: str = "gradcam",
    layer: str = "layer4",
) -> Tensor:
    """The paper's `generate_weighted_eps(craft_weight_matrix(...))`: float [B, 3, H, W]."""
    return torch.where(paper_masks(model, data, method, layer), eps, eps_low)
