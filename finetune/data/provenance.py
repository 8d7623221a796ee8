"""Where a dataset name was loaded from, in the loaders' own terms: a fact results.json records once.

The loaders (sources.load_any, images._load_source) resolve a name in this order: a packaged alias, an
existing local file or folder, else a Hugging Face Hub dataset; `use_packaged` refuses a bare name that is both
an alias and a local path. `is_hub_dataset` answers the same question
without loading anything, right after the data loaded, so the model card never has to guess from prose.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from finetune.core.errors import UserError
from finetune.data import packaged


def use_packaged(name: str, packaged: dict, config: Optional[str] = None) -> bool:
    """True when `name` is one of `packaged`'s aliases and so loads the packaged corpus.

    A bare name that is also an existing local path is refused rather than silently read from the package (the
    user meant one of the two; `./name` says which), and so is a --dataset_config, which no packaged corpus has.
    """
    if name not in packaged:
        return False
    if Path(os.path.expanduser(name)).exists():
        raise UserError(
            f"--dataset {name} names both a packaged corpus and the local path ./{name}: write "
            f"./{name} for the local one, or run from another folder for the packaged corpus"
        )
    if config:
        raise UserError(f"the packaged corpus {name!r} has no configurations: drop --dataset_config {config}")
    return True


def is_hub_dataset(name: str) -> bool:
    """True when the loaders took `name` from the Hugging Face Hub: not a packaged alias, not a local path."""
    if name in packaged.NAMES:
        return False
    return not Path(os.path.expanduser(name)).exists()
