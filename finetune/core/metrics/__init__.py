"""Metric modules for the `evaluate` library, shipped with the package so they work offline.

`evaluate.load("accuracy")` fetches its script from the Hub, which fails offline with a misleading message.
Each folder here is a complete evaluate module (folder/folder.py), loaded by path. Hub metric names are used
only for names we don't ship, and only when online.
"""

from __future__ import annotations

from pathlib import Path

from finetune.core.errors import UserError

SHIPPED = {p.name for p in Path(__file__).parent.iterdir() if (p / f"{p.name}.py").is_file()}


def load_metric(name: str):
    import evaluate  # ~9 s to import: only when a run evaluates

    if name in SHIPPED:
        return evaluate.load(str(Path(__file__).parent / name))
    from finetune.data.sources import is_offline

    if is_offline():
        raise UserError(f"metric {name!r} is not shipped and HF_HUB_OFFLINE=1 forbids fetching it: use one of {sorted(SHIPPED)}")
    try:
        return evaluate.load(name)
    except Exception as err:
        raise UserError(f"could not load metric {name!r}: {str(err).splitlines()[0]}") from None
