"""The one way this project writes a file: to a temporary name beside it, then a rename.

A reader never sees half a file, an interrupted write leaves the previous file in place, and a
file written here gets the mode the umask gives a new file (not mkstemp's owner-only 0600): these
are shared artefacts (DVC's cache, a team's checkout).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator, Sequence
from pathlib import Path

from part.errors import PartError

TEMP_SUFFIX = ".tmp"


class WriteError(OSError, PartError):
    """A file could not be written (a full disk, a file-size limit, permissions). An OSError, so
    that a caller's `except OSError` still sees it; a PartError, so that a command reports it as
    one message naming the file (not its temporary) and exits 2."""

    def __str__(self) -> str:
        return str(self.strerror)


def new_file_mode() -> int:
    """The mode a newly created file gets under the current umask (0644 under umask 022)."""
    with contextlib.suppress(OSError, ValueError):  # Linux: read the umask without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync(path: Path, directory: bool = False) -> None:
    if directory and os.name != "posix":
        return  # directories cannot be opened for fsync on Windows
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _remove_stale_temporaries(path: Path) -> None:
    """Temporaries of `path` left by a killed writer (SIGKILL skips every cleanup)."""
    with contextlib.suppress(OSError):
        for temp in path.parent.glob(f".{path.name}.*{TEMP_SUFFIX}"):
            pid = temp.name[len(path.name) + 2:].split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                temp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on failure it goes.

    The temporary is fsynced before the rename and the directory after it, so a crash leaves
    either the old file or the complete new one. An OSError while writing becomes a WriteError
    that names `path`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise write_error(path, error) from None
    _remove_stale_temporaries(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        yield temp
        os.chmod(temp, new_file_mode())
        _fsync(temp)
        os.replace(temp, path)
        _fsync(path.parent, directory=True)
    except WriteError:
        raise
    except OSError as error:
        raise write_error(path, error) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def write_error(paths: Path | Sequence[Path], error: OSError) -> WriteError:
    paths = [paths] if isinstance(paths, Path) else list(paths)
    reason = error.strerror or str(error)
    kept = [path for path in paths if path.exists()]
    if kept:
        kept_text = (" (its previous version is kept)" if len(paths) == 1 else
                     " (the previous versions are kept: none is replaced unless all are written)")
    else:
        kept_text = ""
    return WriteError(error.errno, f"cannot write {', '.join(map(str, paths))}: {reason}"
                      f"{kept_text}; free some disk space or fix the directory's permissions, "
                      "then run the command again")


@contextlib.contextmanager
def atomic_paths(paths: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Temporaries for several files that appear together: none replaces its file unless every
    one was written without error."""
    paths = [Path(path) for path in paths]
    with contextlib.ExitStack() as stack:
        temps = [stack.enter_context(atomic_path(path)) for path in paths]
        try:
            yield temps
        except WriteError:
            raise
        except OSError as error:  # which of the files failed is not known: they go together
            raise write_error(paths, error) from None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as temp:
        temp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))
