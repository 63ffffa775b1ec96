"""File safety: what Sentinel may write to, how it replaces its own output, what it refuses to load, and
which folders a dashboard visitor may open.

Rules (README "Safety"):
- Sentinel writes only to a path that does not exist, an empty folder, or a folder holding its own earlier
  output of the same kind, recognised by the marker file `sentinel_output.json` it writes into every output
  folder. The current directory, the home folder, a filesystem root (and any folder above them) are refused.
- A model folder is replaced atomically: the new model is written into a hidden staging sibling which is then
  swapped with the old folder in one `renameat2(RENAME_EXCHANGE)` (macOS: `renamex_np(RENAME_SWAP)`), so at
  every instant the path holds the old complete model or the new complete one. Staging folders left by a
  killed run are removed by the next save to the same place.
- Weights are loaded from safetensors only; a folder whose weights exist only as pickle is refused unread.

Every filesystem change goes through the small `_mkdir/_exchange/_rename/_rmtree/_write_text` functions below,
so the fault-injection tests can stop the process between any two of them.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import re
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sentinel.errors import ForbiddenPathError, InvalidOutputError, ModelLoadError, UnsafeModelError

logger = logging.getLogger(__name__)

MARKER_FILE = "sentinel_output.json"
MARKER_FORMAT = 1
KINDS = ("model", "run")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
_STAGING = ".sentinel-staging-"

CONVERT_HINT = ("Sentinel never unpickles files (a pickle can run any code). Convert it once, in an environment "
                "you trust, with plain transformers: AutoModelForCausalLM.from_pretrained(FOLDER)"
                ".save_pretrained(NEW_FOLDER, safe_serialization=True), then load NEW_FOLDER.")


# -- what may be written -----------------------------------------------------------------------------------------

def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker Sentinel wrote into `folder`, or None when there is none (or it is not ours)."""
    path = folder / MARKER_FILE
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(marker, dict) or marker.get("written_by") != "sentinel" or marker.get("kind") not in KINDS:
        return None
    return marker


def _protected(target: Path) -> str | None:
    """Why `target` may never be an output folder (cwd, home, a root, or a folder above them), else None."""
    if target.parent == target:
        return "a filesystem root"
    for name, place in (("the current directory", Path.cwd()), ("your home folder", Path.home())):
        try:
            place = place.resolve()
        except OSError:
            continue
        if target == place:
            return name
        if target in place.parents:
            return f"a folder that contains {name}"
    return None


def check_output_folder(path: str | os.PathLike, kind: str = "model") -> Path:
    """The absolute folder `path` if Sentinel may write its `kind` output there; InvalidOutputError otherwise.

    Allowed: a path that does not exist, an empty folder, or a folder holding Sentinel's own earlier output of
    the same kind (its marker file; for a model, nothing besides the files the marker lists). Nothing is touched.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    target = Path(path).expanduser().resolve()
    why = _protected(target)
    if why is not None:
        raise InvalidOutputError(f"Refusing to write to {target}: it is {why}. Give a new folder, "
                                 "e.g. --out ./pruned-model.")
    if not target.exists():
        return target
    if not target.is_dir():
        raise InvalidOutputError(f"Refusing to write to {target}: it is a file. Give a new folder path.")
    try:
        entries = sorted(p.name for p in target.iterdir())
    except OSError as err:
        raise InvalidOutputError(f"Cannot read {target}: {err.strerror}. Choose another folder.") from None
    if not entries:
        return target
    marker = read_marker(target)
    if marker is None:
        raise InvalidOutputError(
            f"Refusing to write to {target}: it holds files Sentinel did not write ({_some(entries)}). "
            "Give a new or empty folder, or one Sentinel wrote before.")
    if marker["kind"] != kind:
        raise InvalidOutputError(f"Refusing to write a {kind} to {target}: it holds Sentinel {marker['kind']} "
                                 "output. Give a new or empty folder.")
    if kind == "model":
        foreign = [e for e in entries if e != MARKER_FILE and e not in set(marker.get("files", []))]
        if foreign:
            raise InvalidOutputError(
                f"Refusing to replace the Sentinel model in {target}: it also holds files Sentinel did not write "
                f"({_some(foreign)}). Move them out, or save to a new folder.")
    return target


def _some(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def prepare_run_folder(path: str | os.PathLike) -> Path:
    """Check a run's output folder (finetune/benchmark --out), create it and mark it as Sentinel's; returns it.

    The folder appears together with its marker (built aside, then renamed into place), so processes preparing
    the same folder at once (torchrun ranks) never see it unmarked.
    """
    target = check_output_folder(path, kind="run")
    if read_marker(target) is not None:
        return target
    hidden = target.with_name(f".{target.name}{_STAGING}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():   # an empty folder: move the marker in with one rename
            _write_text(hidden, _marker_text("run", []))
            os.replace(hidden, target / MARKER_FILE)
        else:
            _mkdir(hidden)
            _write_text(hidden / MARKER_FILE, _marker_text("run", []))
            try:
                _rename(hidden, target)
            except OSError:   # another process created it first: use theirs if it is a marked run folder
                _rmtree(hidden)
                return check_output_folder(target, kind="run")
    except OSError as err:
        if hidden.is_file():
            hidden.unlink()
        raise InvalidOutputError(f"Cannot create the output folder {target}: {err.strerror}. "
                                 "Choose a writable folder.") from None
    return target


def mark_folder(path: str | os.PathLike, kind: str = "model") -> None:
    """Record `path` (just written in place by Sentinel, e.g. the demo build) as Sentinel's, listing its entries."""
    folder = Path(path)
    entries = sorted(p.name for p in folder.iterdir() if p.name != MARKER_FILE)
    write_file_atomically(folder / MARKER_FILE, _marker_text(kind, entries))


def check_new_file(path: str | os.PathLike, overwrite: bool = False, flag: str = "--overwrite") -> Path:
    """The absolute file path `path` if it may be written: new, or existing and `overwrite` given."""
    target = Path(path).expanduser().resolve()
    if target.is_dir():
        raise InvalidOutputError(f"{target} is a folder; give a file path.")
    if target.exists() and not overwrite:
        raise InvalidOutputError(f"{target} already exists; pass {flag} to replace it, or choose another name.")
    if not target.parent.is_dir():
        raise InvalidOutputError(f"Cannot write {target}: folder {target.parent} does not exist.")
    return target


def write_file_atomically(path: Path, data: str | bytes) -> None:
    """Write `data` to a temporary sibling and rename it over `path`: readers see the old or the new file."""
    tmp = path.with_name(f".{path.name}{_STAGING}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise InvalidOutputError(f"Cannot write {path}: {err.strerror}. Choose a writable path.") from None


# -- atomic replacement of a model folder ---------------------------------------------------------------------------

def replace_folder_atomically(path: str | os.PathLike, write: Callable[[Path], None], kind: str = "model") -> Path:
    """Write a folder with `write(staging)` and swap it into `path` atomically; returns the absolute path.

    `path` is checked first (check_output_folder); staging folders of earlier killed saves are removed; the old
    folder (Sentinel's own) is removed only after the new one is in place.
    """
    target = check_output_folder(path, kind)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InvalidOutputError(f"Cannot write to {target.parent}: {err.strerror}. Choose a writable folder.") from None
    clean_stale_staging(target)
    staging = target.with_name(f".{target.name}{_STAGING}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        _mkdir(staging)
    except OSError as err:
        raise InvalidOutputError(f"Cannot write to {target.parent}: {err.strerror}. Choose a writable folder.") from None
    try:
        write(staging)
        _write_text(staging / MARKER_FILE, _marker_text(kind, sorted(p.name for p in staging.iterdir())))
        if target.exists():
            check_output_folder(target, kind)   # still ours: nothing foreign appeared while we were writing
            _swap(staging, target)
        else:
            _rename(staging, target)
    except BaseException:
        if staging.exists():
            _rmtree(staging)   # after a swap this is the old model, which we wrote and are replacing
        raise
    if staging.exists():
        _rmtree(staging)
    return target


def _marker_text(kind: str, files: list[str]) -> str:
    return json.dumps({"written_by": "sentinel", "format": MARKER_FORMAT, "kind": kind,
                       "files": [f for f in files if f != MARKER_FILE]}, indent=2)


def clean_stale_staging(target: Path) -> list[Path]:
    """Remove staging folders of `target` left by saves whose process has stopped; returns what was removed."""
    prefix = f".{target.name}{_STAGING}"
    removed = []
    try:
        siblings = list(target.parent.iterdir())
    except OSError:
        return removed
    for entry in siblings:
        if not entry.name.startswith(prefix) or not entry.is_dir() or entry.is_symlink():
            continue
        pid_text = entry.name[len(prefix):].split("-", 1)[0]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and pid_alive(int(pid_text)):
            continue   # another process is saving there right now
        logger.info("Removing %s, left by an interrupted save", entry)
        _rmtree(entry)
        removed.append(entry)
    return removed


def remove_owned_folder(path: str | os.PathLike) -> bool:
    """Remove a folder only if Sentinel wrote it (its marker is there); returns whether it was removed."""
    folder = Path(path)
    if not folder.is_dir() or folder.is_symlink() or read_marker(folder) is None:
        if folder.exists():
            logger.warning("Not removing %s: Sentinel did not write it.", folder)
        return False
    _rmtree(folder)
    return True


def pid_alive(pid: int) -> bool:
    """Whether process `pid` runs on this machine (a zombie counts as stopped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.is_file():
        try:
            return stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"
        except OSError:
            return False
    return True


# -- the filesystem steps (one function each, so tests can interrupt between them) ----------------------------------

def _mkdir(path: Path) -> None:
    os.mkdir(path)   # mode 0o777 minus the umask: the user's usual permissions, not mkdtemp's 0700


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def _rename(source: Path, target: Path) -> None:
    os.rename(source, target)


def _rmtree(path: Path) -> None:
    shutil.rmtree(path)


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2   # Linux renameat2 flag
_RENAME_SWAP = 2       # macOS renamex_np flag
_libc: Any = None


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step; False when this system or filesystem cannot."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            _libc = False
    if not _libc:
        return False
    if sys.platform.startswith("linux") and hasattr(_libc, "renameat2"):
        result = _libc.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    elif sys.platform == "darwin" and hasattr(_libc, "renamex_np"):
        result = _libc.renamex_np(os.fsencode(a), os.fsencode(b), _RENAME_SWAP)
    else:
        return False
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _swap(staging: Path, target: Path) -> None:
    """Put staging's contents at target and target's at staging, atomically where the system allows."""
    if _exchange(staging, target):
        return
    # No atomic exchange here (e.g. Windows, or a filesystem without RENAME_EXCHANGE): two renames, with a
    # moment in between where `target` is missing; the old model stays complete under the staging name.
    logger.warning("This filesystem cannot swap folders atomically; replacing %s with two renames.", target)
    aside = staging.with_name(staging.name + "-old")
    _rename(target, aside)
    _rename(staging, target)
    _rename(aside, staging)


# -- what may be loaded ----------------------------------------------------------------------------------------------

def weight_files(folder: Path) -> tuple[list[str], list[str]]:
    """(safetensors files, pickle files) directly in a model folder."""
    names = [p.name for p in folder.iterdir() if p.is_file()]
    safe = sorted(n for n in names if n.endswith(".safetensors") or n == "model.safetensors.index.json")
    pickled = sorted(n for n in names if n.lower().endswith(PICKLE_SUFFIXES)
                     or n.endswith(".bin.index.json"))
    return safe, pickled


def refuse_unsafe_folder(folder: Path) -> None:
    """Raise before anything is read when a local model folder has no safetensors weights.

    A folder whose weights are only pickle files (pytorch_model.bin, *.pt, ...) is refused with how to convert it.
    """
    safe, pickled = weight_files(folder)
    if safe:
        return
    if pickled:
        raise UnsafeModelError(f"{folder} holds its weights only as pickle ({_some(pickled)}). {CONVERT_HINT}")
    raise ModelLoadError(f"{folder} has no weights file (*.safetensors); it is not a complete model folder.")


# -- what the dashboard may open ---------------------------------------------------------------------------------------

MODEL_ROOTS_ENV = "SENTINEL_MODEL_ROOTS"


def allowed_model_roots() -> list[Path]:
    """Folders a dashboard visitor may open models from: $SENTINEL_HOME, the bundled assets/models, and the
    folders listed in $SENTINEL_MODEL_ROOTS (separated by the path separator, ':' on Linux)."""
    from sentinel.store import sentinel_home

    roots = [sentinel_home(), Path(__file__).resolve().parents[1] / "assets" / "models"]
    roots += [Path(p) for p in os.environ.get(MODEL_ROOTS_ENV, "").split(os.pathsep) if p.strip()]
    resolved: list[Path] = []
    for root in roots:
        path = root.expanduser().resolve()
        if path not in resolved:
            resolved.append(path)
    return resolved


def check_allowed_folder(path: str | os.PathLike) -> Path:
    """The resolved folder `path` if it lies under an allowed model root; otherwise one fixed message that says
    nothing about whether the path exists (so the field cannot be used to probe the server's disk)."""
    text = str(path).strip()
    target = Path(text).expanduser().resolve() if text else None
    if target is not None and any(target == root or root in target.parents for root in allowed_model_roots()):
        return target
    raise ForbiddenPathError("Only model folders under this app's model folders can be opened here: the data "
                             f"folder, the bundled models, and the folders listed in {MODEL_ROOTS_ENV}. Ask the "
                             "person who runs the app to add a folder there.")


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


def check_hub_id(text: str) -> str:
    """`text` if it is a plain hub id (`name` or `org/name`) that does not also name a folder on the server;
    otherwise one fixed message (the hub-id field must not open or probe local paths either)."""
    name = text.strip()
    if _HUB_ID.match(name) and ".." not in name and not Path(name).exists():
        return name
    raise ForbiddenPathError("Give a Hugging Face hub id such as gpt2 or org/name; to open a folder, choose "
                             "'Local folder'.")


def redact_server_paths(text: str) -> str:
    """`text` with the server's own folders (data folder, app folder, home folder) replaced by their roles, for
    messages shown to dashboard visitors."""
    from sentinel.store import sentinel_home

    places = [(sentinel_home().expanduser().resolve(), "<data folder>"),
              (Path(__file__).resolve().parents[1], "<app folder>"), (Path.home().resolve(), "~")]
    for folder, role in sorted(places, key=lambda p: -len(str(p[0]))):
        if str(folder) not in ("/", "."):
            text = text.replace(str(folder), role)
    return text


def visitor_name(source: str | os.PathLike | None) -> str:
    """How a model folder (or any file of the app) is named to dashboard visitors, who never see the server's
    folders: relative to the data folder ('models/tiny-pruned'), else the folder's own name ('stories-gpt2');
    a hub id as it is; None is the bundled demo model."""
    from sentinel.store import sentinel_home

    if source is None:
        return "the bundled demo model"
    text = str(source)
    path = Path(text).expanduser()
    if not path.is_absolute() and not path.exists():
        return text                                    # a hub id such as gpt2 or org/name
    resolved = path.resolve()
    home = sentinel_home().expanduser().resolve()
    if resolved == home:
        return "the data folder"
    if home in resolved.parents:
        return resolved.relative_to(home).as_posix()
    return resolved.name
