"""A PNG of training images beside their importance masks, to see what CAM marks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import Tensor

from part.io.atomic import atomic_path


def _as_picture(tensor: Tensor) -> np.ndarray:
    array = tensor.float().numpy()
    if array.shape[0] == 1:
        return array[0]
    return np.transpose(array, (1, 2, 0))


def save_mask_gallery(path: str | Path, images: Tensor, masks: Tensor, labels: Tensor,
                      class_names: list[str], title: str = "") -> Path:
    """Pairs of rows: the images, then their masks (white: budget eps, black: eps_low)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = images.shape[0]
    columns = min(count, 8)
    pairs = (count + columns - 1) // columns
    figure, axes = plt.subplots(2 * pairs, columns, figsize=(1.4 * columns, 2.9 * pairs),
                                squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    for index in range(count):
        row, column = 2 * (index // columns), index % columns
        picture = _as_picture(images[index] / 255.0)
        axes[row, column].imshow(picture, cmap="gray" if picture.ndim == 2 else None,
                                 vmin=0, vmax=1)
        axes[row, column].set_title(class_names[int(labels[index])], fontsize=7)
        axes[row + 1, column].imshow(_as_picture(masks[index]), cmap="gray", vmin=0, vmax=1)
    figure.suptitle(f"importance masks {title}".strip(), fontsize=9)
    figure.tight_layout()
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(figure)
    return path
