"""Atomic writes: a file or folder is either the old complete version or the new complete version.

Everything a run leaves behind (results, configs, final models, checkpoints) goes through here, so a crash,
a full disk or Ctrl-C in the middle of a save never leaves a half-written file where a good one was. The ground
floor of the toolkit's files: the run directory (finetune/core/run_directory.py) and the checkpoints
(finetune/core/checkpoints/) both write through it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from finetune.core.errors import UserError


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~user_umask())  # mkstemp makes 0600: the file gets the mode a plain open() gives
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


@contextmanager
def atomic_dir(target: Path):
    """Yield a temporary folder beside `target`; on success it replaces `target` in one rename.

    On any exception (KeyboardInterrupt included) the temporary folder is removed and `target` is untouched.
    """
    tmp = new_temp_dir(target)
    try:
        yield tmp
        commit_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def new_temp_dir(target: Path) -> Path:
    """An empty folder `.NAME.tmp.XXXX` beside `target`, on the same filesystem (so a rename can publish it)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return make_temp_dir(prefix=f".{target.name}.tmp.", dir=target.parent)


def make_temp_dir(prefix: str, dir: Path) -> Path:
    """tempfile.mkdtemp with the mode a plain mkdir gives (mkdtemp's 0700 would outlive the rename into place)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
    tmp.chmod(0o777 & ~user_umask())
    return tmp


def user_umask() -> int:
    """The process umask (read by setting it and setting it back: there is no getter before Python 3.12's os)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


_UMASK = None


def commit_dir(tmp: Path, target: Path) -> None:
    """Flush `tmp` to disk, then make it `target` by rename (an existing `target` is swapped out, then removed).

    The flush matters for power loss, not for a killed process: the page cache outlives the process, but after
    a power cut a renamed folder could otherwise hold empty files.
    """
    tmp, target = Path(tmp), Path(target)
    with_user_modes(tmp)
    for path in sorted(tmp.rglob("*")):
        if path.is_file():
            fsync_path(path)
    fsync_path(tmp)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(tmp, target)
    fsync_path(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temp(folder: Path) -> list[Path]:
    """Remove the `.NAME.tmp.*` / `.NAME.old` folders a killed process left behind; return what went."""
    folder = Path(folder)
    stale = [p for p in folder.glob(".*.tmp.*") if p.is_dir()] + [p for p in folder.glob(".*.old") if p.is_dir()]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


# ---- full disks and unwritable folders ---------------------------------------------------------------------

WRITE_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
    errno.EFBIG: "the file is too large for this filesystem",
    errno.EROFS: "the filesystem is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}
# The same conditions as they surface from libraries that do not raise OSError (safetensors' Rust writer).
_WRITE_MESSAGES = {
    "No space left on device": errno.ENOSPC,
    "os error 28": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
    "Permission denied": errno.EACCES,
    "Not a directory": errno.ENOTDIR,
}


def write_problem(err: BaseException, folder: Path):
    """If `err`, raised while writing into `folder`, comes from a full disk or an unwritable place, say which.

    OSError carries an errno; safetensors puts the OS message in its text; torch.save only says "unexpected pos"
    or "file write failed", so then the folder itself is probed with a small write. None: some other failure.
    """
    code = getattr(err, "errno", None)
    if code not in WRITE_ERRNOS:
        code = next((c for text, c in _WRITE_MESSAGES.items() if text in str(err)), None)
    if code is None and isinstance(err, RuntimeError) and ("unexpected pos" in str(err) or "write failed" in str(err)):
        code = _probe_write(Path(folder))
    return WRITE_ERRNOS.get(code) if code is not None else None


def _probe_write(folder: Path):
    """errno of writing 1 MiB into `folder` (or its nearest existing parent), None if that works."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder) as f:
            f.write(b"\0" * (1 << 20))
            f.flush()
            os.fsync(f.fileno())
    except OSError as probe:
        return probe.errno
    return None


@contextmanager
def disk_errors(what: str, folder: Path, kept: str = ""):
    """Turn a full disk / unwritable folder while writing `what` into a one-line UserError that names the fix.

    `kept` says what is still safe (e.g. the last good checkpoint); anything else is re-raised untouched.
    """
    try:
        yield
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 (classified below; re-raised unless it is a disk problem)
        reason = write_problem(err, folder)
        if reason is None:
            raise
        fix = (
            "free some disk space or choose another --output_dir"
            if "disk" in reason or "large" in reason
            else "choose a writable --output_dir"
        )
        raise UserError(f"could not write {what} in {folder}: {reason}; {fix}{'; ' + kept if kept else ''}") from None


def with_user_modes(folder: Path) -> None:
    """Give `folder` and everything in it the modes the user's umask gives a new file or folder.

    Libraries that write atomically create private files (safetensors 0.8 writes 0600, tempfile 0600 / 0700):
    left so, a run would be unreadable to the user's group on a shared machine whatever the umask says.
    """
    umask = user_umask()
    for path in [Path(folder), *Path(folder).rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def publish_files(src_dir: Path, dest_dir: Path) -> None:
    """Move every file of src_dir into dest_dir, each with an atomic rename (same filesystem)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    with_user_modes(src_dir)
    for item in sorted(Path(src_dir).iterdir()):
        target = dest_dir / item.name
        if item.is_dir():
            if target.exists():
                shutil.rmtree(target)
        os.replace(item, target)
