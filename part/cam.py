"""`part.cam`, the documented import path of the CAM (docs/api.md); the code lives in
part.importance.activation_maps and part.importance.mask_rules."""

from part.importance.activation_maps import CAM_METHODS, CamError, cam
from part.importance.mask_rules import importance_mask

__all__ = ["CAM_METHODS", "CamError", "cam", "importance_mask"]
