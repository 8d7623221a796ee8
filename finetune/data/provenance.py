"""Where a dataset name was loaded from, in the loaders' own terms: a fact results.json records once.

The loaders (sources.load_any, images._load_source) resolve a name in this order: a packaged alias, an
existing local file or folder, else a Hugging Face Hub dataset. `is_hub_dataset` answers the same question
without loading anything, right after the data loaded, so the model card never has to guess from prose.
"""

from __future__ import annotations

import os
from pathlib import Path


def packaged_names() -> set[str]:
    """The aliases of every corpus a package carries (text and images)."""
    from finetune.data.images import PACKAGED_IMAGES
    from finetune.data.text import PACKAGED_TEXT
    from finetune.data.tokens import PACKAGED_NER

    return set(PACKAGED_TEXT) | set(PACKAGED_IMAGES) | set(PACKAGED_NER)


def is_hub_dataset(name: str) -> bool:
    """True when the loaders took `name` from the Hugging Face Hub: not a packaged alias, not a local path."""
    if name in packaged_names():
        return False
    return not Path(os.path.expanduser(name)).exists()
