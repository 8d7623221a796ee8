"""Atomic writes: a file or folder is either the old complete version or the new complete version.

Everything a run leaves behind (results, configs, final models, checkpoints) goes through here, so a crash,
a full disk or Ctrl-C in the middle of a save never leaves a half-written file where a good one was.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
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
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp.", dir=target.parent))


def commit_dir(tmp: Path, target: Path) -> None:
    """Flush `tmp` to disk, then make it `target` by rename (an existing `target` is swapped out, then removed).

    The flush matters for power loss, not for a killed process: the page cache outlives the process, but after
    a power cut a renamed folder could otherwise hold empty files.
    """
    tmp, target = Path(tmp), Path(target)
    for path in sorted(tmp.rglob("*")):
        if path.is_file():
            _fsync(path)
    _fsync(tmp)
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(tmp, target)
    _fsync(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync(path: Path) -> None:
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

_WRITE_ERRNOS = {
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
    "No space left on device": errno.ENOSPC, "os error 28": errno.ENOSPC, "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS, "Permission denied": errno.EACCES, "Not a directory": errno.ENOTDIR,
}


def write_problem(err: BaseException, folder: Path):
    """If `err`, raised while writing into `folder`, comes from a full disk or an unwritable place, say which.

    OSError carries an errno; safetensors puts the OS message in its text; torch.save only says "unexpected pos"
    or "file write failed", so then the folder itself is probed with a small write. None: some other failure.
    """
    code = getattr(err, "errno", None)
    if code not in _WRITE_ERRNOS:
        code = next((c for text, c in _WRITE_MESSAGES.items() if text in str(err)), None)
    if code is None and isinstance(err, RuntimeError) and ("unexpected pos" in str(err) or "write failed" in str(err)):
        code = _probe_write(Path(folder))
    return _WRITE_ERRNOS.get(code) if code is not None else None


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
    from finetune.errors import UserError

    try:
        yield
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 (classified below; re-raised unless it is a disk problem)
        reason = write_problem(err, folder)
        if reason is None:
            raise
        fix = ("free some disk space or choose another --output_dir" if "disk" in reason or "large" in reason
               else "choose a writable --output_dir")
        raise UserError(f"could not write {what} in {folder}: {reason}; {fix}{'; ' + kept if kept else ''}") from None


def publish_files(src_dir: Path, dest_dir: Path) -> None:
    """Move every file of src_dir into dest_dir, each with an atomic rename (same filesystem)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    for item in sorted(Path(src_dir).iterdir()):
        target = dest_dir / item.name
        if item.is_dir():
            if target.exists():
                shutil.rmtree(target)
        os.replace(item, target)


def check_run_dir(output_dir: str, overwrite: bool, resume: bool) -> Path:
    """Refuse to clobber an earlier run unless asked; with --resume, insist there is something to resume.

    Touches nothing: call it before loading anything, so bad input fails fast and leaves the folder as it was.
    Under `accelerate launch` every process calls it, and none goes on until all have checked: otherwise the
    main process could create the folder before another one looked, which would then see "an earlier run".
    """
    from finetune.errors import UserError

    run_dir = Path(output_dir)
    if resume:
        if not (run_dir / "checkpoints").is_dir():
            raise UserError(f"nothing to resume in {run_dir}: it has no checkpoints/ folder; run without --resume")
    elif run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        raise UserError(
            f"{run_dir} already holds files (an earlier run?): pass --overwrite to replace it, --resume to "
            f"continue it, or choose another --output_dir"
        )
    elif run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--output_dir {run_dir} is a file, not a folder: choose another --output_dir")
    _check_writable(run_dir)
    _wait_for_everyone()
    return run_dir


def _wait_for_everyone() -> None:
    """A barrier when running as one of several processes (torch.distributed set up), else nothing."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _is_main_process() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _check_writable(run_dir: Path) -> None:
    """Fail before any work if the run folder (or the folder it would be created in) can't take files."""
    from finetune.errors import UserError

    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--output_dir {run_dir} is inside {existing}, which is a file, not a folder: choose another --output_dir")
    try:
        with tempfile.TemporaryFile(dir=existing):  # os.access would say yes to root on a read-only mount
            pass
    except OSError as err:
        reason = _WRITE_ERRNOS.get(err.errno, err.strerror)
        raise UserError(f"--output_dir {run_dir} is not writable ({existing}: {reason}): choose a writable --output_dir") from None


def prepare_run_dir(output_dir: str, overwrite: bool, resume: bool) -> Path:
    """Create the run folder; with --overwrite, remove what would mix stale state into the new run.

    Call it once data and models have loaded, so that a bad input never costs the earlier run anything.
    """
    run_dir = check_run_dir(output_dir, overwrite, resume)
    if _is_main_process():  # one process changes the folder; the others wait for it
        if overwrite:
            # Only what this toolkit wrote: stale checkpoints would be resumed from, a stale scratch/ model would
            # sit beside new results. Final model files are replaced file by file when the new run saves.
            for stale in ("checkpoints", "scratch", "logs"):
                shutil.rmtree(run_dir / stale, ignore_errors=True)
        run_dir.mkdir(parents=True, exist_ok=True)
    _wait_for_everyone()
    return run_dir
