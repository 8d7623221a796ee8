"""A disk cache for `dataset.map`: work done once (tokenizing texts, decoding and resizing images) is read back
by the next run, the resumed run and a study's next trial.

Entries live under $FINETUNE_PIPELINE_CACHE, else <cache>/pipeline/ (<cache>: $FINETUNE_CACHE, else
~/.cache/finetune), keyed by what they depend on (`content_key`): the texts or the images' bytes (or paths, sizes
and mtimes), the labels, and the settings (tokenizer, max_length, resize). The text path (text.py) and the image
path (pipeline.py) both write through it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Optional

from finetune.core.atomic_io import atomic_dir
from finetune.core.environment import cache_dir
from finetune.data.sources import column_values

PIPELINE_VERSION = "1"  # bump when what a cache entry holds changes


def cache_root() -> Path:
    """$FINETUNE_PIPELINE_CACHE, else <cache>/pipeline ($FINETUNE_CACHE, else ~/.cache/finetune)."""
    return Path(os.environ.get("FINETUNE_PIPELINE_CACHE") or cache_dir() / "pipeline")


def content_key(split, columns: list[str], settings: dict) -> str:
    """A hash of what a cached result depends on: the named columns' values (an image's bytes, or its path, size
    and mtime), the row order, and `settings` (resize size, tokenizer, ...)."""
    digest = hashlib.sha1(json.dumps({"v": PIPELINE_VERSION, **settings}, sort_keys=True, default=str).encode())
    digest.update(str(len(split)).encode())
    for column in columns:
        for value in column_values(split, column):
            if isinstance(value, dict) and ("bytes" in value or "path" in value):  # an undecoded datasets Image
                if value.get("bytes") is not None:
                    digest.update(value["bytes"])
                else:
                    stat = os.stat(value["path"])
                    digest.update(f"{value['path']}|{stat.st_size}|{stat.st_mtime_ns}".encode())
            else:
                digest.update(repr(value).encode())
            digest.update(b"\0")
    return digest.hexdigest()[:20]


def tokenizer_key(tokenizer) -> str:
    """A tokenizer's identity for keys and fingerprints, in milliseconds: a fast tokenizer's whole serialisation
    (vocabulary, merges, normalizer, post-processor) and its settings; else datasets' Hasher, which pickles the
    object (about a second for GPT-2's)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        from datasets.fingerprint import Hasher

        return Hasher.hash(tokenizer)
    digest = hashlib.sha1(backend.to_str().encode())
    digest.update(json.dumps([type(tokenizer).__name__, tokenizer.init_kwargs], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:20]


def map_fingerprint(split, *settings) -> str:
    """`new_fingerprint` for split.map: the split's own fingerprint and what the mapped function depends on (give
    the tokenizer as `tokenizer_key`). Without it datasets pickles the function, and the tokenizer it closes over,
    to hash it: about a second per split and per map for GPT-2's tokenizer."""
    return hashlib.sha1(json.dumps([split._fingerprint, *settings], default=str).encode()).hexdigest()


def cached_map(split, function: Callable, key: str, what: str, features: Optional[Callable] = None, **map_kwargs):
    """split.map(function, batched=True, **map_kwargs), computed once and read back from <cache>/pipeline/<what>-<key>.

    Returns (dataset, True if it came from the cache). `features`, if given, is called (only when computing) for
    the map's output Features. Entries appear by atomic rename, so a crash mid-write leaves no half entry; an
    unwritable cache only costs recomputing next time.
    """
    from datasets import load_from_disk

    folder = cache_root() / f"{what}-{key}"
    if (folder / "dataset_info.json").is_file():
        try:
            return load_from_disk(str(folder)), True
        except Exception:  # a damaged entry is only a cache: recompute it
            pass
    if features is not None:
        map_kwargs["features"] = features()
    result = split.map(
        function, batched=True, desc=what, new_fingerprint=map_fingerprint(split, what, key), **map_kwargs
    )
    try:
        if not (folder / "dataset_info.json").is_file():  # (another process may have written it meanwhile)
            with atomic_dir(folder) as tmp:
                result.save_to_disk(str(tmp))
        return load_from_disk(str(folder)), False  # memory-mapped: workers share it without copying
    except OSError:
        return result, False
