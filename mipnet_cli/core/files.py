"""Atomic file writing shared by every writer (JSON, checkpoints, images, videos), and the
checks every command runs on its output paths before doing any work."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import MipnetError


def temp_prefix(final: Path) -> str:
    """The name prefix of `final`'s temporary files: hidden, with this process's id, so a
    later run can tell the leftovers of a killed run from another live run's files."""
    return f".{final.name}.{os.getpid()}."


def remove_stale_temps(final: Path) -> None:
    """Delete the temporary files that killed runs (SIGKILL, power loss) left beside `final`:
    those whose process id names no live process."""
    with contextlib.suppress(OSError):
        for leftover in final.parent.glob(f".{final.name}.*.*"):
            pid = leftover.name[len(final.name) + 2:].split(".", 1)[0]
            if pid.isdigit() and not _alive(int(pid)):
                with contextlib.suppress(OSError):
                    leftover.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only on success.

    The temporary name keeps the final suffix (or `suffix`) so that libraries that pick a
    format from the extension (OpenCV, PyAV, matplotlib) still work.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(final)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(final),
                               suffix=suffix if suffix is not None else final.suffix,
                               dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600 files; outputs follow the umask
        os.replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


NOT_FINITE = ("refusing to write non-finite numbers (NaN or infinity), which JSON does not "
              "allow; the network's outputs are not finite (a damaged checkpoint?)")


def json_line(obj: Any, where: str | os.PathLike = "output") -> str:
    """`obj` as strict JSON: a NaN or infinity is an error naming `where`."""
    try:
        return json.dumps(obj, allow_nan=False)
    except ValueError:
        raise MipnetError(f"{where}: {NOT_FINITE}") from None


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    """A JSON file's content; MipnetError naming the file when it is missing or not JSON."""
    p = Path(path)
    if not p.is_file():
        raise MipnetError(f"{p}: {what} not found")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise MipnetError(f"{p}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise MipnetError(f"{p}: not a UTF-8 text file") from None


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = None) -> None:
    """Write strict JSON atomically (never NaN or Infinity: an error naming the file, and the
    previous file stays)."""
    try:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, allow_nan=False)
    except ValueError:
        raise MipnetError(f"{path}: {NOT_FINITE}") from None


def finite(values: Iterable[Any]) -> bool:
    """Whether every value is a finite number (not a bool, string, NaN or infinity)."""
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in values)


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_outputs(outputs: Mapping[str, str | os.PathLike | None],
                  inputs: Iterable[str | os.PathLike] = (), folders: Iterable[str] = ()) -> None:
    """Before any work: every output (option name → path; `folders` name the options that
    are folders) can be created and written, none is an input, no two are the same file."""
    folder_opts = set(folders)
    given = {name: Path(p) for name, p in outputs.items() if p is not None}
    for name, path in given.items():
        is_folder = name in folder_opts
        if path.exists() and is_folder and not path.is_dir():
            raise MipnetError(f"{name} {path}: exists and is not a folder")
        if path.is_dir() and not is_folder:
            raise MipnetError(f"{name} {path}: is a folder; give a file name")
        parent = path if is_folder else path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            raise MipnetError(f"{name} {path}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise MipnetError(f"{name} {path}: cannot write in {parent} (permission denied)")
    sources = [Path(p) for p in inputs]
    for name, path in given.items():
        for src in sources:
            if _same(path, src):
                raise MipnetError(f"{name} {path} is an input; choose another name")
    names = list(given)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if _same(given[a], given[b]):
                raise MipnetError(f"{a} and {b} are the same file ({given[a]}); give two names")
