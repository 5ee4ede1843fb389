"""Files written whole or not at all: checkpoints, encoders, result files, progress.json.

A reader (a resumed stage, Snakemake, a status command) sees either the previous file or the
new one, never a partial one, whether the writer is killed or the disk fills up mid-write.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable


class DiskFull(OSError):
    """No space left where a file (a checkpoint, an encoder) is written; the previous file is intact."""


def write_atomic(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """`write(f)` into a temporary file next to `path`, fsync, then rename it onto `path`: a kill
    or a full disk mid-write leaves the previous file intact (a full disk raises DiskFull)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600: readable as the user's other files are
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT) or "No space left" in str(err):
            kept = "the previous one is intact" if path.exists() else "there was none before"
            raise DiskFull(errno.ENOSPC, f"no space left on the device of {path}: the write stopped and {kept}; "
                                         f"free space there and ask again to resume") from None
        raise


def umask() -> int:
    """The process's file-creation mask (reading it means setting it: set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


USER_UMASK = "RANDSAC_USER_UMASK"  # the umask the user started the workflow with, for what the group shares


def run_folder_umask(mask: int) -> int:
    """The umask of what writes a run folder: its files readable by the user's group, writable by
    the user alone (by others, readable as `mask` says), whatever the user's umask (002 on a
    shared results/ would let the group overwrite a run's checkpoint or result)."""
    return (mask | 0o022) & ~0o050


def keep_run_folders_private() -> None:
    """Narrow this process's umask to `run_folder_umask`; its jobs inherit it (Slurm's too: sbatch
    passes the submitter's umask on). The user's own is kept in the environment for the files
    the group shares (`shared_files`)."""
    os.environ.setdefault(USER_UMASK, f"{umask():03o}")
    os.umask(run_folder_umask(user_umask()))


def user_umask() -> int:
    """The user's own umask: the one the workflow started with, else this process's."""
    value = os.environ.get(USER_UMASK)
    return int(value, 8) if value else umask()


@contextmanager
def shared_files():
    """Make files with the user's own umask: what a group logs into together (the sqlite store,
    its artifacts folder) is as writable as the user's umask says."""
    old = os.umask(user_umask())
    try:
        yield
    finally:
        os.umask(old)


def write_text_atomic(path: Path, text: str) -> None:
    """`text` (UTF-8) as the whole of `path`, atomically (`write_atomic`)."""
    write_atomic(path, lambda f: f.write(text.encode()))


def write_json_atomic(path: Path, obj: Any) -> None:
    """`obj` as the JSON of a run's result file (indented, keys sorted), atomically."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True))
