"""Run a command while one directory of a project is a full disk, and report what happened.

    unshare --mount [--map-root-user] python tests/_full_disk.py REPO DIRECTORY -- COMMAND...

In a mount namespace of its own (so nothing outlives this process, even when it is killed) the
directory is replaced by a small tmpfs holding a copy of its files, and the rest of the tmpfs
is filled: the command's next write there fails with ENOSPC, as on a real full disk. The report
(JSON on stdout) holds the command's exit code and stderr, the sha256 of every file of the
directory before and after, and the temporaries left behind.
"""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FILLER = ".filler"
SPARE = 256 * 1024  # room the tmpfs gets beyond the copied files; the filler takes all of it


def _digests(directory: Path) -> dict[str, str]:
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*"))
            if path.is_file() and path.name != FILLER}


def _fill(directory: Path) -> None:
    chunk = b"\0" * 4096
    with open(directory / FILLER, "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(chunk)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
    probe = directory / ".probe"
    try:  # the disk is full: not one more byte fits
        with open(probe, "wb", buffering=0) as handle:
            handle.write(b"x")
        raise SystemExit("the tmpfs still takes writes after filling it")
    except OSError as error:
        assert error.errno == errno.ENOSPC, error
    finally:
        probe.unlink(missing_ok=True)


def main(argv: list[str]) -> int:
    separator = argv.index("--")
    repo, directory = Path(argv[0]), Path(argv[0]) / argv[1]
    command = argv[separator + 1:]
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as saved:
        copy = Path(saved) / "copy"
        shutil.copytree(directory, copy, symlinks=True)
        size = sum(path.stat().st_size + 4096 for path in copy.rglob("*")) + SPARE
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                       check=True)
        shutil.copytree(copy, directory, symlinks=True, dirs_exist_ok=True)
    before = _digests(directory)
    _fill(directory)
    result = subprocess.run(command, cwd=repo, capture_output=True, text=True)
    after = _digests(directory)
    temporaries = [name for name in after if name.endswith(".tmp")]
    print(json.dumps({"returncode": result.returncode, "stderr": result.stderr,
                      "before": before, "after": after, "temporaries": temporaries}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
