"""`python -m part.launch --nproc-per-node N --device D -m stages.<name> ARGS...`, the command of
the burn-in, mask and training stages in dvc.yaml; the launcher is part.runtime.launch."""

from part.runtime.launch import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
