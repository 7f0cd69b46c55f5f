"""`part.mask_rules`, a documented import path (docs/api.md); the code lives in
part.importance.mask_rules."""

from part.importance.mask_rules import MASK_RULES, budget_map, importance_mask

__all__ = ["MASK_RULES", "budget_map", "importance_mask"]
