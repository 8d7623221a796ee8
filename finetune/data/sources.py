"""Where examples come from: a Hub dataset name, a local file, or a corpus a package carries.

Every source ends as a `datasets.DatasetDict` with train / validation / test. A dataset's own splits are used
where it has them (an unlabelled split, like SST-2's hidden test labels, does not count); the missing ones are
carved from train, deterministically from the seed, after removing duplicate examples so that no test
example is also a training example.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from finetune.errors import UserError

LOCAL_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


def is_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def load_local_file(path: Path):
    """A csv / tsv / json / jsonl / parquet / txt file as a DatasetDict with one split, train."""
    from datasets import load_dataset

    builder = LOCAL_FORMATS.get(path.suffix.lower())
    if builder is None:
        raise UserError(f"{path}: unsupported file type {path.suffix!r}; use one of {', '.join(LOCAL_FORMATS)}")
    kwargs = {"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {}
    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes): point --dataset at a file with examples")
    try:
        return load_dataset(builder, data_files={"train": str(path)}, **kwargs)
    except Exception as err:  # pyarrow / pandas parse errors come in many types
        raise UserError(f"could not read {path} as {builder}: {first_line(err)}; check the file's format") from None


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none (some library errors are blank)."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def load_hub_dataset(name: str, config: Optional[str] = None):
    from datasets import load_dataset

    try:
        return load_dataset(name, config)
    except Exception as err:
        if is_offline():
            raise UserError(
                f"dataset {name!r} is not a local file and is not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 "
                f"forbids downloading it: pass a local csv/jsonl/parquet file, an offline alias, or unset HF_HUB_OFFLINE"
            ) from None
        raise UserError(f"could not load dataset {name!r} from the Hub: {first_line(err)}") from None


def load_any(name: str, packaged: dict):
    """Resolve a dataset name: a packaged alias (callable returning a DatasetDict), a local path, or a Hub name.

    Returns (DatasetDict, a human-readable note of where the data came from).
    """
    if name in packaged:
        dataset, note = packaged[name]()
        return dataset, note
    path = Path(os.path.expanduser(name))
    if path.is_file():
        return load_local_file(path), f"local file {path}"
    if path.is_dir():
        from datasets import load_dataset

        ignored = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()
                         and p.suffix.lower() not in LOCAL_FORMATS and not p.name.startswith("."))
        skipped = f" (not data files, ignored: {', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''})" if ignored else ""
        try:
            return load_dataset(str(path)), f"local folder {path}{skipped}"
        except Exception as err:
            raise UserError(f"could not load the folder {path} as a dataset: {first_line(err)}") from None
    if name.startswith((".", "/", "~")) or name.endswith(tuple(LOCAL_FORMATS)):
        raise UserError(f"dataset file {name} does not exist: check the path")
    return load_hub_dataset(name), f"Hugging Face Hub dataset {name}"


def make_splits(dataset_dict, seed: int, key_column: str, validation_fraction: float = 0.1, test_fraction: float = 0.1, labelled=None):
    """Train / validation / test from whatever splits a source has.

    `labelled(split) -> bool` tells usable splits from unlabelled ones (dropped, with a note).
    Returns (DatasetDict, notes).
    """
    from datasets import DatasetDict, concatenate_datasets

    notes = []
    splits = {}
    aliases = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation", "test": "test"}
    for name, split in dataset_dict.items():
        canonical = aliases.get(name)
        if canonical is None:
            notes.append(f"ignored split {name!r}")
            continue
        if labelled is not None and not labelled(split):
            notes.append(f"split {name!r} has no labels (e.g. hidden test labels): not used")
            continue
        splits[canonical] = split
    if "train" not in splits:
        raise UserError(f"the dataset has no labelled train split (found: {', '.join(dataset_dict) or 'none'}): provide one")
    if len(splits["train"]) == 0:
        raise UserError("the dataset is empty (0 training rows): check the file or the filters")

    for name, split in splits.items():
        _check_no_empty_keys(split, name, key_column)
    missing = [s for s in ("validation", "test") if s not in splits]
    if missing:
        train = _deduplicate(splits["train"], key_column)
        if len(train) < len(splits["train"]):
            notes.append(f"removed {len(splits['train']) - len(train)} duplicate {key_column} rows before splitting")
        if len(train) < MIN_ROWS_TO_SPLIT:
            raise UserError(f"the dataset has {len(train)} distinct {key_column} row(s): too few to carve validation and "
                            f"test splits from (at least {MIN_ROWS_TO_SPLIT}); add examples, or give validation and "
                            f"test splits of its own")
        fractions = {"validation": validation_fraction, "test": test_fraction}
        for name in missing:
            # each carved split takes its fraction of the original train size
            share = fractions[name] * len(splits["train"]) / len(train)
            parts = train.train_test_split(test_size=share, seed=seed, shuffle=True)
            train, splits[name] = parts["train"], parts["test"]
            notes.append(f"{name} split carved from train ({len(splits[name])} rows, seed {seed})")
        splits["train"] = train
    for name in ("train", "validation", "test"):
        if len(splits[name]) == 0:
            raise UserError(f"the {name} split is empty: use a larger dataset or different split fractions")
    return DatasetDict({k: splits[k] for k in ("train", "validation", "test")}), notes


def check_text_column(raw, column: str, flag: str = "--text_column") -> None:
    """The text column must hold strings: numbers, lists or mappings would reach the tokenizer and fail there."""
    for split_name, split in raw.items():
        feature = split.features[column]
        dtype = getattr(feature, "dtype", None)
        if dtype not in ("string", "large_string", "null"):
            kind = dtype or type(feature).__name__.lower()
            raise UserError(f"the text column {column!r} ({split_name} split) holds {kind} values, not text: pass {flag} "
                            f"with the column that holds the texts, or quote the values in the file")


MIN_ROWS_TO_SPLIT = 10  # a few rows in each carved split, and training data left over


def _check_no_empty_keys(split, split_name: str, column: str) -> None:
    """A missing or blank input (an empty CSV cell) would reach the tokenizer as None: name its row instead."""
    for i, value in enumerate(split[column]):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise UserError(f"row {i + 1} of the {split_name} split has an empty {column!r} (row {i + 1} of the data, "
                            f"line {i + 2} of a CSV file with a header): fill it in or remove the row")


def _deduplicate(split, column: str):
    seen = set()
    keep = []
    for i, value in enumerate(split[column]):
        key = value if not isinstance(value, list) else tuple(value)
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return split.select(keep) if len(keep) < len(split) else split
