"""The one way to run a model in eval mode for a while and give it back as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(model: nn.Module, *, freeze: bool = False) -> Iterator[nn.Module]:
    """`model` in eval mode for the block (batch norm uses its running statistics, dropout is
    off); with `freeze`, its parameters also stop requiring gradients (attacks need gradients
    with respect to the input only). Both are restored afterwards, also on an exception."""
    was_training = model.training
    frozen = [p for p in model.parameters() if p.requires_grad] if freeze else []
    model.eval()
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        yield model
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
        model.train(was_training)
