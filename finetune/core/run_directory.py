"""The run directory: a folder of its own with a manifest, built beside an earlier run and swapped in once
finished, held by a lock while a command works in it.

Its files are written atomically (finetune/core/atomic_io.py); checkpoints and the resume fingerprint are
finetune/core/checkpoints/'s.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from finetune.core.atomic_io import WRITE_ERRNOS, atomic_write_json, fsync_path, remove_stale_temp
from finetune.core.checkpoints.lean import CHECKPOINTS, release_best_copy
from finetune.core.checkpoints.resume import check_resume, fingerprint
from finetune.core.errors import UserError

# ---- run directories ----------------------------------------------------------------------------------------
#
# A run directory is a folder of its own that only this toolkit writes into. It carries a manifest,
# `.finetune-run.json`: while a run works in it, {"status": "running"} (everything in the folder is the run's:
# the folder was empty or absent when the manifest went in); once it finished, {"status": "finished", "files":
# [every file the run wrote]}. The manifest is the only permission to replace anything:
#   - a folder without one that holds files is never touched (refused, whatever the flags);
#   - a finished run is replaced only with --overwrite, and never while it holds files its manifest does not list;
#   - the replacement is built in a sibling, NAME.unfinished, and swapped in by renames once it has finished,
#     so a failed --overwrite leaves the earlier run byte for byte as it was;
#   - an unfinished attempt (a crash after the folder was made) is replaced by the next run without --overwrite,
#     unless it holds checkpoints: then --resume continues it, --overwrite starts again.

MANIFEST = ".finetune-run.json"
STAGING_SUFFIX = ".unfinished"


def read_manifest(folder: Path) -> Optional[dict]:
    """The run manifest of `folder`, or None if it has none (or one this toolkit cannot read)."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("status") in ("running", "finished") else None


def refuse_unfinished(folder: Path, verb: str) -> None:
    """A one-line error when a run is still working in `folder` (or stopped before it finished): its files are
    not a finished model yet, so reading or publishing them would give something no run produced."""
    if (read_manifest(folder) or {}).get("status") == "running":
        raise UserError(
            f"{folder} holds a run that has not finished (its {MANIFEST} says running): wait for it, "
            f"or continue it with --resume, before {verb}"
        )


def _write_manifest(folder: Path, **fields) -> None:
    atomic_write_json(Path(folder) / MANIFEST, {"format": 1, **fields})


def _run_files(folder: Path) -> list[str]:
    return sorted(
        str(p.relative_to(folder))
        for p in Path(folder).rglob("*")
        if (p.is_file() or p.is_symlink()) and p.name != MANIFEST
    )


def foreign_files(folder: Path) -> list[str]:
    """What in `folder` this toolkit did not write: everything when it has no manifest, nothing while a run is
    working in it, else the files its manifest does not list (leftovers of interrupted atomic writes aside)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    manifest = read_manifest(folder)
    if manifest is None:
        return sorted(p.name for p in folder.iterdir())
    if manifest["status"] == "running":
        return []
    listed = set(manifest.get("files", []))
    return [rel for rel in _run_files(folder) if rel not in listed and not _write_leftover(rel)]


def _write_leftover(rel: str) -> bool:
    """A part of .NAME.tmp.XXXX / .save.XXXX / .NAME.old: what an interrupted atomic write leaves (ours)."""
    return any(
        part.startswith(".") and (".tmp." in part or part.startswith(".save.") or part.endswith(".old"))
        for part in Path(rel).parts
    )


def staging_dir(run_dir: Path) -> Path:
    """Where an --overwrite builds the new run beside the earlier one (NAME.unfinished)."""
    run_dir = Path(run_dir)
    return run_dir.with_name(run_dir.name + STAGING_SUFFIX)


def has_checkpoints(folder: Path) -> bool:
    return any(Path(folder).glob("checkpoints/*/step_*/train_state.json"))


def steps_done(folder: Path) -> Optional[int]:
    """The most optimizer steps any model's newest checkpoint in `folder` holds (None: no checkpoint)."""
    steps = [
        int(p.parent.name.split("_")[-1])
        for p in Path(folder).glob("checkpoints/*/step_*/train_state.json")
        if p.parent.name.split("_")[-1].isdigit()
    ]
    return max(steps) if steps else None


def _refuse_special(output_dir: str) -> Path:
    """The folders a run must never be: "", the current folder, home, a filesystem root (or an ancestor of those)."""

    if not str(output_dir).strip():
        raise UserError("--output_dir is empty: name a folder of its own for the run, e.g. --output_dir runs/mine")
    run_dir = Path(os.path.expanduser(output_dir))
    resolved = run_dir.resolve()
    special = {Path.cwd().resolve(): "the current folder", Path.home().resolve(): "your home folder"}
    for place, what in special.items():
        if resolved == place or resolved in place.parents:
            raise UserError(
                f"--output_dir {output_dir} is {what}{'' if resolved == place else ' or a folder above it'}: "
                f"a run needs a folder of its own, e.g. --output_dir runs/mine"
            )
    if resolved == Path(resolved.anchor):
        raise UserError(
            f"--output_dir {output_dir} is a filesystem root: a run "
            "needs a folder of its own, e.g. --output_dir runs/mine"
        )
    return run_dir


def _listing(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_run_dir(output_dir: str, overwrite: bool, resume: bool, config=None) -> Path:
    """Refuse every output folder this run may not use; return the folder the run will end up in.

    Touches nothing: call it before loading anything, so bad input fails fast and leaves the folder as it was.
    With --resume and the run's `config`, a config that changes what a step means is refused here too
    (finetune/core/checkpoints/resume.py), before any file changes.
    Under `accelerate launch` every process calls it, and none goes on until all have checked: otherwise the
    main process could create the folder before another one looked, which would then see "an earlier run".
    """

    run_dir = _refuse_special(output_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--output_dir {run_dir} is a file, not a folder: choose another --output_dir")
    if _is_main_process():
        _recover_swap(run_dir)  # (a swap killed between its renames: finish it first, it decides what is there)
    _wait_for_everyone()
    manifest = read_manifest(run_dir) if run_dir.is_dir() else None
    foreign = foreign_files(run_dir)
    if foreign:
        what = (
            "holds files this toolkit did not write"
            if manifest is None
            else "holds files its run manifest does not list (added after the run?)"
        )
        if manifest is None and (run_dir / "results.json").exists():
            what += " (a run from a version without run manifests? delete it yourself if so)"
        raise UserError(
            f"--output_dir {run_dir} {what}: {_listing(foreign)}; a run directory is a folder of its own, "
            f"so nothing is replaced there: move those files out, or choose another --output_dir"
        )
    staging = staging_dir(run_dir)
    if resume:
        if not (has_checkpoints(run_dir) or has_checkpoints(staging)):
            raise UserError(
                f"nothing to resume in {run_dir}: it has no checkpoints (checkpoints/*/step_*); run without --resume"
            )
        if config is not None:
            target = staging if has_checkpoints(staging) else run_dir
            check_resume(config, (read_manifest(target) or {}).get("fingerprint"), str(target), steps_done(target))
    elif manifest is not None and manifest["status"] == "finished" and not overwrite:
        raise UserError(
            f"{run_dir} already holds an earlier run: pass --overwrite to replace it (it stays as it is "
            f"until the new run has finished), --resume to continue it, or choose another --output_dir"
        )
    elif manifest is not None and manifest["status"] == "running" and has_checkpoints(run_dir) and not overwrite:
        raise UserError(
            f"{run_dir} holds an unfinished run with checkpoints: pass --resume to continue it, "
            f"--overwrite to start again, or choose another --output_dir"
        )
    elif not overwrite and read_manifest(staging) is not None and has_checkpoints(staging):
        raise UserError(
            f"{staging} holds an unfinished --overwrite of {run_dir} with checkpoints: pass --resume to "
            f"continue it, --overwrite to start again, or choose another --output_dir"
        )
    if staging.exists() and not (read_manifest(staging) or not any(staging.iterdir())):
        raise UserError(
            f"{staging} exists and was not made by this toolkit; a run in {run_dir} would build its "
            f"replacement there: move it, or choose another --output_dir"
        )
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

    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(
            f"--output_dir {run_dir} is inside {existing}, which is a file, not a folder: choose another --output_dir"
        )
    for folder in {existing, run_dir.parent if run_dir.parent.exists() else existing}:  # the swap renames in the parent
        try:
            with tempfile.TemporaryFile(dir=folder):  # os.access would say yes to root on a read-only mount
                pass
        except OSError as err:
            reason = WRITE_ERRNOS.get(err.errno, err.strerror)
            raise UserError(
                f"--output_dir {run_dir} is not writable ({folder}: {reason}): choose a writable --output_dir"
            ) from None


def prepare_run_dir(output_dir: str, overwrite: bool, resume: bool, config=None) -> Path:
    """Make the folder this run writes into, and return it: the run directory itself, or with --overwrite of a
    finished run, its sibling NAME.unfinished (finish_run_dir swaps it in once the run has finished).

    Call it once data and models have loaded, so that a bad input never costs the earlier run anything.
    """
    run_dir = check_run_dir(output_dir, overwrite, resume, config)
    staging = staging_dir(run_dir)
    manifest = read_manifest(run_dir) if run_dir.is_dir() else None
    if resume:  # continue where the checkpoints are: an interrupted --overwrite's sibling first
        target = staging if has_checkpoints(staging) else run_dir
    elif manifest is not None and manifest["status"] == "finished":  # (only with --overwrite: checked above)
        target = staging
    else:
        target = run_dir
    if _is_main_process():  # one process changes the folders; the others wait for it
        if target == run_dir and staging.exists():  # an abandoned replacement attempt (checked: it is ours)
            shutil.rmtree(staging)
        if not resume:
            _attempts.setdefault(target, target.exists() and not any(target.iterdir()))
            if target.exists():
                if not overwrite and any(target.iterdir()):
                    print(
                        f"note: replacing the unfinished attempt in {target} (a run that stopped before its first "
                        f"checkpoint; nothing in it could be resumed)",
                        flush=True,
                    )
                shutil.rmtree(target)  # an unfinished attempt, or an earlier staging folder: ours, checked above
            target.mkdir(parents=True)
        fields = (read_manifest(target) or {}) if resume else {}
        fields = {k: v for k, v in fields.items() if k not in ("format", "status", "files")}
        if target == staging:
            fields["replaces"] = run_dir.name
        if config is not None and "fingerprint" not in fields:
            # what --resume must find again (finetune/core/checkpoints/resume.py)
            fields["fingerprint"] = fingerprint(config)
        _write_manifest(target, status="running", **fields)
    _wait_for_everyone()
    return target


def finish_run_dir(run_dir: Path) -> Path:
    """Mark the run in `run_dir` finished (its manifest lists every file it wrote); if it was built beside an
    earlier run (--overwrite), swap it in now. Returns the run directory's final path. Main process only."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir) or {}
    replaces = manifest.get("replaces")
    final = run_dir.with_name(replaces) if replaces else run_dir
    _release_best_copies(run_dir)
    kept = {k: v for k, v in manifest.items() if k not in ("format", "status", "files")}
    _write_manifest(run_dir, status="finished", **kept, files=_run_files(run_dir))
    if replaces:
        _swap_in(run_dir, final)
    return final


def _release_best_copies(run_dir: Path) -> None:
    """Each model's best weights are now in the run's saved model too: keep one copy (finetune.core.engine checks that
    the two hold the same tensors first). The models are those results.json lists, each with its folder."""
    try:
        models = json.loads((run_dir / "results.json").read_text()).get("models", [])
    except (OSError, ValueError, AttributeError):
        return

    for entry in models:
        role, folder = entry.get("role"), entry.get("dir")
        if isinstance(role, str) and isinstance(folder, str) and (run_dir / "checkpoints" / role / "best").is_dir():
            release_best_copy(run_dir / "checkpoints" / role / "best", run_dir / folder, run_dir)


def record_files(run_dir: Path, paths) -> None:
    """Add files a later command wrote into a finished run (finetune merge) to its manifest, so --overwrite may
    replace them with the rest."""
    manifest = read_manifest(run_dir)
    if manifest is None or manifest["status"] != "finished":
        return
    root = Path(run_dir).resolve()
    files = set(manifest.get("files", [])) | {str(Path(p).resolve().relative_to(root)) for p in paths}
    _write_manifest(run_dir, **{**manifest, "files": sorted(files)})


def forget_missing_files(run_dir: Path) -> None:
    """Drop the files no longer there from a finished run's manifest (finetune clean removed its checkpoints), so
    that it lists what the run holds."""
    manifest = read_manifest(run_dir)
    if manifest is None or manifest["status"] != "finished":
        return
    root = Path(run_dir)
    files = [f for f in manifest.get("files", []) if (root / f).is_file() or (root / f).is_symlink()]
    _write_manifest(run_dir, **{**manifest, "files": files})


def _swap_in(staging: Path, final: Path) -> None:
    """staging -> final by renames: final -> .NAME.replaced, staging -> final, then the replaced run is removed.

    A crash between the renames leaves .NAME.replaced and a finished staging folder; _recover_swap completes it.
    """
    replaced = final.with_name(f".{final.name}.replaced")
    if replaced.exists():
        shutil.rmtree(replaced)
    if final.exists():
        os.replace(final, replaced)
    os.replace(staging, final)
    fsync_path(final.parent)
    shutil.rmtree(replaced, ignore_errors=True)


def _recover_swap(run_dir: Path) -> None:
    """Complete (or undo) a swap a killed process left half done."""
    replaced = run_dir.with_name(f".{run_dir.name}.replaced")
    if not replaced.is_dir():
        return
    staging = staging_dir(run_dir)
    if run_dir.exists():  # the swap happened; only the removal of the old run is left
        shutil.rmtree(replaced, ignore_errors=True)
    elif (read_manifest(staging) or {}).get("status") == "finished":
        os.replace(staging, run_dir)
        shutil.rmtree(replaced, ignore_errors=True)
    elif _whole_run(replaced):
        os.replace(replaced, run_dir)
    else:  # killed while it was being removed (and the new run is gone too): what is left of it is no run
        shutil.rmtree(replaced, ignore_errors=True)


def _whole_run(folder: Path) -> bool:
    """A finished run whose every listed file is still there (not one half removed)."""
    manifest = read_manifest(folder) or {}
    return manifest.get("status") == "finished" and all((folder / rel).exists() for rel in manifest.get("files", []))


@contextmanager
def run_attempt():
    """Around one training run: if it fails before writing any checkpoint, the folder it made goes again (an
    empty folder the user made stays, empty), so a failed attempt leaves nothing behind and the earlier run, if
    any, was never touched. An attempt with checkpoints stays, marked unfinished, for --resume.
    """
    earlier = dict(_attempts)
    try:
        yield
    except BaseException:
        if _is_main_process():
            for folder, existed_empty in _attempts.items():
                if folder in earlier or not folder.is_dir() or has_checkpoints(folder):
                    continue
                if (read_manifest(folder) or {}).get("status") == "running":
                    shutil.rmtree(folder, ignore_errors=True)
                    if existed_empty:
                        folder.mkdir()
        raise
    finally:
        for folder in set(_attempts) - set(earlier):
            del _attempts[folder]


_attempts: dict = {}  # folders prepare_run_dir made for a new run in this process -> "was an empty folder before"


# ---- one command per run directory -------------------------------------------------------------------------
#
# Two commands writing into one run directory at once lose one run (the second replaces the first's live folder
# as "an unfinished attempt"). So each command holds an OS lock (flock) on `.NAME.lock`, a hidden file BESIDE the
# run directory NAME, for as long as it works there. Beside, not inside: the folder itself is made, removed by a
# failed attempt and replaced by --overwrite's swap, while the file beside it outlives all of that and covers
# NAME.unfinished and .NAME.replaced too. The kernel drops a lock when its process ends, however it ends (kill -9
# included), so no dead process ever holds one; the file it leaves behind (pid, start time, command) says whose it
# was, and the next command notes that it takes it over. A released lock's file is removed.
# Under `accelerate launch` rank zero alone locks (the other ranks write nothing of the run's).

_held: dict = {}  # lock file -> file descriptor, for the locks this process holds


def lock_file(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.with_name(f".{run_dir.name}.lock")


@contextmanager
def run_lock(output_dir, command: str):
    """Hold the lock of run directory `output_dir` for the block, or raise a one-line UserError naming the
    process that holds it (`command` is what this one says about itself). Re-entrant: inside a block that holds
    it already, nothing more happens. Taking it first completes what a killed command left half done there
    (a swap, half-written folders): whoever holds the lock owns those leftovers."""
    run_dir = _refuse_special(str(output_dir))
    key = _lock_key(run_dir)
    if not _is_rank_zero() or key in _held:
        yield run_dir
        return
    made = _missing_parents(key)
    try:
        _held[key] = _acquire(key, run_dir, command)
    except BaseException:
        _remove_empty(made)
        raise
    try:
        clean_leftovers(run_dir)
        yield run_dir
    finally:
        _release(key, _held.pop(key), made)


def _lock_key(run_dir: Path) -> Path:
    """The lock file of `run_dir`, absolute (runs/x and ./runs/x are one run)."""
    return lock_file(Path(os.path.abspath(run_dir)))


def _is_rank_zero() -> bool:
    return os.environ.get("RANK", "0") == "0"  # (an env check: works before the process group is set up)


def _missing_parents(path: Path) -> list[Path]:
    """The folders above `path` that do not exist yet, deepest first (made for the lock, removed with it)."""
    missing = []
    for parent in Path(path).parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def _acquire(path: Path, run_dir: Path, command: str) -> int:
    import fcntl

    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            _check_writable(run_dir)  # names the problem: a file in the way, a read-only folder
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd, wait=True)
            os.close(fd)
            raise UserError(
                f"{run_dir} is in use by another finetune command ({_describe(holder)}): wait for it "
                f"to end, or choose another output folder"
            ) from None
        except OSError:  # no locks on this filesystem (some network mounts): go on unguarded, as before
            print(
                f"note: cannot lock {path} (this filesystem has no file locks): do not start a second "
                f"command on {run_dir} while this one runs",
                flush=True,
            )
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)  # its holder removed the file between our open and our lock: lock the new one
    earlier = _read_holder(fd)
    if earlier:
        print(
            f"note: taking over the lock of {run_dir} left by {_describe(earlier)}, which ended without "
            f"releasing it (killed?)",
            flush=True,
        )
    import json as _json
    import socket
    from datetime import datetime

    mine = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "since": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, (_json.dumps(mine) + "\n").encode(), 0)
    return fd


def _read_holder(fd: int, wait: bool = False) -> dict:
    """What the lock file says about its holder ({} if nothing yet; `wait`: give a holder that has just locked
    a moment to write it)."""
    import time

    for _ in range(20 if wait else 1):
        try:
            holder = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        except (OSError, ValueError):
            holder = None
        if isinstance(holder, dict):
            return holder
        if wait:
            time.sleep(0.05)
    return {}


def _describe(holder: dict) -> str:
    import socket

    where = f" on {holder['host']}" if holder.get("host") not in (None, socket.gethostname()) else ""
    return (
        f"pid {holder.get('pid', '?')}{where}, {holder.get('command', 'a finetune command')}, "
        f"since {holder.get('since', 'an unknown time')}"
    )


def _release(path: Path, fd: int, made: list[Path]) -> None:
    """Remove the lock file while still holding it (a process that opened it meanwhile sees that and retries),
    then unlock; then the folders made for it, if nothing else went into them."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.close(fd)
    _remove_empty(made)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            break


def clean_leftovers(run_dir: Path) -> None:
    """What a killed command left half done in or beside `run_dir`: a swap (completed or undone), and in the run
    (and its NAME.unfinished) the temporary folders of interrupted atomic writes (a commit_dir killed between its
    renames gets its earlier version back). Only for the lock's holder: another command's are live."""
    run_dir = Path(run_dir)
    if not run_dir.parent.is_dir():
        return
    _recover_swap(run_dir)
    for folder in (run_dir, staging_dir(run_dir)):
        if folder.is_dir() and read_manifest(folder) is not None:  # a run's own folder, nothing else
            for old in folder.glob(".*.old"):
                target = folder / old.name[1 : -len(".old")]
                if old.is_dir() and not target.exists():
                    os.replace(old, target)
            remove_stale_temp(folder)


def run_root(path: Path) -> Optional[Path]:
    """The run directory that holds `path` (the nearest folder above it with a run manifest), or None."""
    for folder in Path(os.path.abspath(path)).parents:
        if (folder / MANIFEST).is_file():
            return folder
    return None


@contextmanager
def writing_into(path: Path, command: str):
    """Around a command that writes `path` (a file or a folder, by an atomic write): hold the lock of the run
    directory that holds it, else of `path` itself; remove what a killed writer of `path` left beside it
    (.NAME.tmp.*); once written, record in the run's manifest every file that came into the run meanwhile (the
    lock says they are this command's: `path`, and what it wrote beside it), so that --overwrite and --resume
    know them as the run's. Yields the run directory, or None."""
    path = Path(path)
    root = run_root(path)
    with run_lock(root or path, command):
        if path.parent.is_dir():
            for stale in path.parent.glob(f".{path.name}.tmp.*"):
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        before = set(_run_files(root)) if root is not None else set()
        yield root
        if root is not None:
            record_files(root, [root / rel for rel in set(_run_files(root)) - before if not _write_leftover(rel)])


# ---- a finished run without its checkpoints (--keep_checkpoints none, finetune clean) ----------------------------


def checkpoint_entries(run_dir: Path) -> list[tuple[str, int]]:
    """(checkpoints/MODEL/ENTRY, bytes) of each step_N and best folder a run holds, in name order."""
    root = Path(run_dir) / CHECKPOINTS
    entries = sorted(p for p in root.glob("*/*")) if root.is_dir() else []
    return [(str(p.relative_to(run_dir)), folder_bytes(p)) for p in entries]


def remove_checkpoints(run_dir: Path) -> int:
    """Delete the checkpoints/ folder of a finished run and drop its files from the run manifest; returns the bytes
    freed. The saved model, results and card stay: after this the run cannot be resumed, everything else reads it.

    One rename first (to .checkpoints.old, which an interrupted removal leaves and every check passes over), so a
    kill midway never leaves a checkpoint folder with files missing that --resume could try to load.
    """
    run_dir = Path(run_dir)
    if (read_manifest(run_dir) or {}).get("status") != "finished":
        raise UserError(
            f"{run_dir} holds no finished run: its checkpoints are what --resume continues from, so they stay"
        )
    folder, gone = run_dir / CHECKPOINTS, run_dir / f".{CHECKPOINTS}.old"
    freed = folder_bytes(folder) + folder_bytes(gone)
    if folder.exists():
        shutil.rmtree(gone, ignore_errors=True)
        os.replace(folder, gone)
    forget_missing_files(run_dir)
    shutil.rmtree(gone, ignore_errors=True)
    return freed


def run_size(folder: Path) -> str:
    """What `folder` takes on disk, for the end-of-run line: "1.8 MB" (links not followed)."""
    return human_size(folder_bytes(folder))


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under `folder` (links not followed; 0 when it does not exist)."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())


def human_size(size: float) -> str:
    """1834000 -> "1.8 MB" (powers of 1000, as `du --si` and file managers print)."""
    for unit in ("B", "KB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
