"""`part.checkpoint`, a documented import path (docs/api.md); the code lives in
part.models.checkpoint."""

from part.models.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_extra_tensors,
    read_metadata,
    save_checkpoint,
)

__all__ = ["CheckpointError", "load_checkpoint", "load_extra_tensors", "read_metadata",
           "save_checkpoint"]
