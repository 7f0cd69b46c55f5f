"""The pipeline's stages: one thin Typer command per DVC stage over the part package."""
