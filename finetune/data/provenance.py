"""Where a dataset came from, as the loader that loaded it knows it: a fact results.json records once.

The loaders (sources.load_any, images._load_source, tokens.load_words_and_tags) resolve a name in this order: a
packaged alias, an existing local file or folder, else a Hugging Face Hub dataset; `use_packaged` refuses a bare
name that is both an alias and a local path. Each returns a `Provenance` beside the data, so results.json
(`dataset_kind`, `dataset_source`) and the model card state what happened rather than guess it from the name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from finetune.core.errors import UserError

KINDS = ("packaged", "local", "hub")


@dataclass(frozen=True)
class Provenance:
    """Where a loader took the data from: `kind` is "packaged" (a corpus a package carries), "local" (a file or
    folder) or "hub" (a Hugging Face Hub dataset); `note` says it in words, with the details (which package and
    licence, which file and format, which Hub configuration)."""

    kind: str
    note: str

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"provenance kind must be one of {KINDS}, got {self.kind!r}")


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
