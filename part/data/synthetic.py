"""A synthetic data set, generated in memory from a seed (no files): for tests, CI and quick runs
where a real data set is not at hand."""

from __future__ import annotations

import numpy as np
import torch

from part.data import RawSplit

SYNTHETIC_SIZES = {"train": 2000, "test": 500}
SYNTHETIC_SEEDS = {"train": 20240, "test": 20241}
SYNTHETIC_CLASSES = 10
SYNTHETIC_IMAGE_SIZE = 32
# One colour per class (matplotlib's tab10), so colour, position and orientation all carry the
# class: a small CNN learns it within an epoch, and CAMs should land on the blob.
SYNTHETIC_PALETTE = np.array([
    [0.12, 0.47, 0.71], [1.00, 0.50, 0.05], [0.17, 0.63, 0.17], [0.84, 0.15, 0.16],
    [0.58, 0.40, 0.74], [0.55, 0.34, 0.29], [0.89, 0.47, 0.76], [0.50, 0.50, 0.50],
    [0.74, 0.74, 0.13], [0.09, 0.75, 0.81],
])


def _synthetic_angles_degrees() -> list[int]:
    return [round(180 * k / SYNTHETIC_CLASSES) for k in range(SYNTHETIC_CLASSES)]


def make_synthetic(split: str) -> RawSplit:
    """Class k: a coloured stripe blob at angle 18k degrees, centred on a ring at angle 36k degrees
    (jittered by up to 2 px), over grey noise. Seeded per split, so train and test differ."""
    rng = np.random.default_rng(SYNTHETIC_SEEDS[split])
    n, size, classes = SYNTHETIC_SIZES[split], SYNTHETIC_IMAGE_SIZE, SYNTHETIC_CLASSES
    labels = rng.permutation(np.arange(n) % classes)
    ring = 2 * np.pi * labels / classes
    centre_y = size / 2 + 8 * np.sin(ring) + rng.uniform(-2, 2, n)
    centre_x = size / 2 + 8 * np.cos(ring) + rng.uniform(-2, 2, n)
    grid = np.arange(size, dtype=np.float32)
    dy = grid[None, :, None] - centre_y[:, None, None].astype(np.float32)
    dx = grid[None, None, :] - centre_x[:, None, None].astype(np.float32)
    envelope = np.exp(-(dx**2 + dy**2) / np.float32(2 * 4.0**2))[:, None]
    stripe_angle = (np.pi * labels / classes).astype(np.float32)
    along = dx * np.cos(stripe_angle)[:, None, None] + dy * np.sin(stripe_angle)[:, None, None]
    phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)[:, None, None]
    stripes = 0.5 + 0.5 * np.cos(np.float32(2 * np.pi / 5.0) * along + phase)
    colours = SYNTHETIC_PALETTE.astype(np.float32)[labels][:, :, None, None]
    images = rng.standard_normal((n, 3, size, size), dtype=np.float32)
    images *= np.float32(0.1)
    images += np.float32(0.4)  # grey noise background
    images += envelope * (stripes[:, None] * colours - images)  # blend the blob in
    pixels = np.clip(np.rint(images * 255), 0, 255).astype(np.uint8)
    return RawSplit(
        images=torch.from_numpy(pixels),
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=[f"stripes-{angle:03d}deg" for angle in _synthetic_angles_degrees()],
        source_files={},
    )

