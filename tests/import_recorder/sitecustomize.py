"""Records, at exit, every project file a stage process executed, while a real `dvc repro` runs
it (tests/conftest.py puts this directory on PYTHONPATH for the shared tiny repro): one JSON file
per stage process in $PART_RECORD_IMPORTS, holding the process's command line (sys.orig_argv)
and the files of its working directory (or $RECORD_ROOT) that it loaded, relative and sorted.
Processes that run no stage (dvc itself, git) record nothing."""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import sys
from pathlib import Path


def _is_stage(argv: list[str]) -> bool:
    return "-m" in argv and any(word.startswith(("stages.", "part.launch")) for word in argv)


def _record() -> None:
    out = os.environ.get("PART_RECORD_IMPORTS")
    if not out or not _is_stage(sys.orig_argv):
        return
    root = Path(os.environ.get("RECORD_ROOT", Path.cwd())).resolve()
    # a module run with -m (the stage, and the launcher that runs it in-process) is __main__
    # while it runs, under no name of its own afterwards
    argv = sys.orig_argv
    names = [getattr(module, "__file__", None) for module in list(sys.modules.values())]
    names += [importlib.util.find_spec(argv[i + 1]).origin for i, word in enumerate(argv[:-1])
              if word == "-m"]
    files = set()
    for name in names:
        if name:
            path = Path(name).resolve()
            if path.is_relative_to(root) and path.is_file():
                files.add(str(path.relative_to(root)))
    record = {"argv": sys.orig_argv[1:], "cwd": str(Path.cwd()), "files": sorted(files)}
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"{os.getpid()}.json").write_text(json.dumps(record))


if os.environ.get("PART_RECORD_IMPORTS"):
    atexit.register(_record)
