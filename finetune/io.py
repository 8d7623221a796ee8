"""Atomic writes: a file or folder is either the old complete version or the new complete version.

Everything a run leaves behind (results, configs, final models, checkpoints) goes through here, so a crash,
a full disk or Ctrl-C in the middle of a save never leaves a half-written file where a good one was.
"""

from __future__ import annotations

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
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp.", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(target, old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
    return run_dir


def prepare_run_dir(output_dir: str, overwrite: bool, resume: bool) -> Path:
    """Create the run folder; with --overwrite, remove what would mix stale state into the new run.

    Call it once data and models have loaded, so that a bad input never costs the earlier run anything.
    """
    run_dir = check_run_dir(output_dir, overwrite, resume)
    if overwrite:
        # Only what this toolkit wrote: stale checkpoints would be resumed from, a stale scratch/ model would
        # sit beside new results. Final model files are replaced file by file when the new run saves.
        for stale in ("checkpoints", "scratch", "logs"):
            shutil.rmtree(run_dir / stale, ignore_errors=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir
