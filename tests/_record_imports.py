"""`python tests/_record_imports.py OUT MODULE ARGS...` runs `python -m MODULE ARGS...` from the
current directory and writes to OUT (JSON) every file of that directory the run executed: the
module itself and each project module it imported, relative paths, sorted. With RECORD_ROOT set
(a study stage, run in its run directory with PYTHONPATH at the project), the project is that
directory instead: it goes first on sys.path and the paths are relative to it."""

from __future__ import annotations

import importlib.util
import json
import os
import runpy
import sys
from pathlib import Path


def _project_files(root: Path, module: str) -> list[str]:
    files = {Path(importlib.util.find_spec(module).origin).resolve()}
    for loaded in list(sys.modules.values()):
        name = getattr(loaded, "__file__", None)
        if name:
            files.add(Path(name).resolve())
    return sorted(str(path.relative_to(root)) for path in files
                  if path.is_relative_to(root) and path.is_file()
                  and path != Path(__file__).resolve())


def main() -> None:
    out, module, *args = sys.argv[1:]
    root = Path(os.environ.get("RECORD_ROOT", Path.cwd())).resolve()
    sys.path.insert(0, str(root))  # what `python -m` does: the project's own code first
    sys.argv = [module, *args]
    code: int | str | None = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code
    finally:
        Path(out).write_text(json.dumps(_project_files(root, module)))
    sys.exit(code)


if __name__ == "__main__":
    main()
