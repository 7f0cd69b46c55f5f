"""`part.budget_trace`, a documented import path (docs/api.md); the code lives in
part.importance.budget_trace."""

from part.importance.budget_trace import BudgetTrace, load_trace

__all__ = ["BudgetTrace", "load_trace"]
