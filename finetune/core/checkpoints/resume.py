"""What a checkpoint promises about its run, so that --resume continues that run and no other.

Every checkpoint holds `fingerprint.json`: the value of every configuration field that changes what a training
step means, plus digests of what the flags point at (the dataset file or folder, the model's config.json) and
the number of processes. `--resume` compares the new command's fingerprint with the checkpoint's before
anything is loaded or written, and refuses in one line that names each field that differs.

The fields that MAY change on resume say so themselves, in their metadata ("resume": "may_change", or "may_grow"
for max_steps / num_epochs: finetune/core/config.py); docs/scaling.md lists them. Changing them leaves every
optimizer step as it was (the resumed run gives the weights, bit for bit, of one that never stopped), except a
longer max_steps / num_epochs: the learning-rate schedule then decays towards the new end from the step the
checkpoint holds.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from finetune.core.atomic_io import atomic_write_json
from finetune.core.config import may_change_on_resume
from finetune.core.errors import UserError

FINGERPRINT_FILE = "fingerprint.json"


def fingerprint(config, processes: Optional[int] = None) -> dict:
    """{field: value} of every field that must not change on resume, plus what the paths point at."""
    may_change = may_change_on_resume(config)
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name not in may_change}
    for name in ("dataset", "model"):
        if isinstance(values.get(name), str):
            digest = _path_digest(values[name], model=name == "model")
            if digest:  # a local file or folder: what it holds counts, not where it is (it may move)
                values[name] = "a local path"
                values[f"{name} (contents)"] = digest
    values["processes"] = processes if processes is not None else int(os.environ.get("WORLD_SIZE", "1"))
    return json.loads(json.dumps(values, default=str))  # as it reads back from the file


def save_fingerprint(folder: Path, config, processes: Optional[int] = None) -> None:
    atomic_write_json(Path(folder) / FINGERPRINT_FILE, fingerprint(config, processes))


def check_resume(
    config, saved: Optional[dict], where: str, steps_done: Optional[int] = None, processes: Optional[int] = None
) -> None:
    """Refuse (one line, naming each field) to resume a run fingerprinted `saved` with a config that changes what
    a step means; `where` names the run or checkpoint in the message. No fingerprint (a run from before they
    existed): resumed as before."""
    if saved is not None:
        now = fingerprint(config, processes)
        changed = [key for key in sorted(set(saved) | set(now)) if saved.get(key) != now.get(key)]
        if changed:
            described = "; ".join(_describe(key, saved.get(key), now.get(key)) for key in changed[:4])
            more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
            raise UserError(
                f"cannot resume {where}: {described}{more}. Put the value back to continue that run, or pass "
                f"--overwrite (without --resume) to start again (what may change on resume: docs/scaling.md)"
            )
    max_steps = getattr(config, "max_steps", None)
    if steps_done is not None and max_steps is not None and max_steps < steps_done:
        raise UserError(
            f"cannot resume {where}: --max_steps {max_steps} is below the {steps_done} steps already "
            f"trained; pass --max_steps {steps_done} or more"
        )


def read_fingerprint(checkpoint: Path) -> Optional[dict]:
    """The fingerprint a checkpoint holds, None if it has none (written before fingerprints existed)."""
    path = Path(checkpoint) / FINGERPRINT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise UserError(f"{path} is unreadable: pass --overwrite to start the run again") from None


def _describe(key: str, saved, now) -> str:
    if key.endswith("(contents)"):
        flag = key.split(" ")[0]
        return f"the {flag} at --{flag} changed since the checkpoint was written"
    if key == "processes":
        return f"the checkpoint was trained on {saved} process(es), this run has {now}"
    return f"--{key} is {_show(now)}, the checkpoint was trained with {_show(saved)}"


def _show(value) -> str:
    if value is None:
        return "unset"
    text = " ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _path_digest(name: str, model: bool) -> Optional[str]:
    """(cached per process while the path's size and time stamp stay: checkpoints ask again and again)"""
    path = Path(os.path.expanduser(name))
    try:
        stat = path.stat()
    except (OSError, ValueError):
        return None
    if model and path.is_dir():  # cheap, and an edit inside would not change the folder's time stamp
        return _digest.__wrapped__(name, model, stat.st_size, stat.st_mtime_ns)
    return _digest(name, model, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _digest(name: str, model: bool, size: int, mtime_ns: int) -> Optional[str]:
    """A digest of a local file (its bytes) or folder (a model: its config.json and its weight files' names and
    sizes; data: every file's name, size and bytes up to 64 MB in all, then names and sizes); None for Hub names
    and aliases (the name is the identity there)."""
    path = Path(os.path.expanduser(name))
    if not path.exists():
        return None
    h = hashlib.sha256()
    if path.is_file():
        _hash_file(h, path)
    elif model:  # its configuration, and the weight files by name and size (hashing gigabytes would take seconds)
        for part in ("config.json", "adapter_config.json"):
            if (path / part).is_file():
                _hash_file(h, path / part)
        for weights in sorted([*path.glob("*.safetensors"), *path.glob("*.bin")]):
            h.update(f"{weights.name}\0{weights.stat().st_size}\0".encode())
    else:
        budget = 64 << 20
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            size = file.stat().st_size
            h.update(f"{file.relative_to(path)}\0{size}\0".encode())
            if size <= budget:
                _hash_file(h, file)
                budget -= size
    return h.hexdigest()[:16]


def _hash_file(h, path: Path) -> None:
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
