"""Which pixels matter, and the per-pixel budget that follows from it.

- `activation_maps`: batched GradCAM, XGradCAM and LayerCAM (`cam`).
- `mask_rules`: from maps to boolean masks (the paper's `official` rule, `quantile`) and from
  masks to budget maps (`importance_mask`, `budget_map`).
- `masks`: the masks of a whole data set, keyed by sample, and their file format.
- `variants`: how each training variant (baseline, PART, the controls) turns masks into the
  budget of an epoch.
- `budget_trace`: what a run spent per epoch; the controls follow PART's.
- `gallery`: a picture of images beside their masks, to inspect.

Above `part.models` (CAM runs a model), below `part.attacks` and `part.training`, which spend
these budgets.
"""

from part.importance.activation_maps import cam
from part.importance.budget_trace import load_trace
from part.importance.mask_rules import budget_map, importance_mask

__all__ = ["budget_map", "cam", "importance_mask", "load_trace"]
