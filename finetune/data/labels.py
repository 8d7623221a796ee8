"""Labelled splits, for every modality: columns, unlabelled splits, the label set and its encoding.

A loader (text.py, images.py) turns its source into a DatasetDict, then hands it here:

    raw = pick_columns(raw, dataset, {"text": (text_column, "--text_column"), "label": (label_column, "--label_column")})
    splits, label_names, notes = labelled_splits(raw, key_column="text", expected=labels, seed=seed)

The steps are separate functions so that later label kinds reuse them: `label_names` derives the set from a split,
`encode_labels` maps values to ids, `label_key` says how one raw value is named. A multi-label or regression task
brings its own `label_names` / encoder; token classification encodes each tag with `label_key` and the same index.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from numbers import Number
from typing import Optional

from finetune.errors import UserError

# Values that stand for "no label": SST-2 and GLUE hide their test labels as -1, other datasets leave them empty.
MISSING = (None, -1)


@dataclass
class ClassificationData:
    splits: "object"  # DatasetDict train / validation / test; column `label` holds ClassLabel ids 0..K-1
    label_names: list[str]
    notes: list[str] = field(default_factory=list)  # notes[0] says where the data came from


def pick_columns(raw, dataset: str, columns: dict[str, tuple[str, str]]):
    """Keep only the wanted columns, renamed to what the rest of the toolkit reads.

    `columns` maps the canonical name to (the dataset's column, the flag that sets it), e.g.
    {"label": ("stars", "--label_column")}. A column missing from any split is a one-line error naming it, the
    columns that exist and the flag.
    """
    for split_name, split in raw.items():
        for column, flag in columns.values():
            if column not in split.column_names:
                raise UserError(f"dataset {dataset!r} ({split_name} split) has no column {column!r} (columns: "
                                f"{', '.join(split.column_names)}): pass {flag} NAME")
    raw = raw.select_columns([column for column, _ in columns.values()])
    for canonical, (column, _) in columns.items():
        if column != canonical:
            raw = raw.rename_column(column, canonical)
    return raw


def is_labelled(split, column: str = "label") -> bool:
    """False for a split whose labels are all missing (hidden test labels): it is dropped, not trained on."""
    return any(value not in MISSING for value in split[column])


def class_names_of(split, column: str = "label") -> list[str]:
    """The names a `ClassLabel` column carries (in the dataset's order), else []."""
    return list(getattr(split.features[column], "names", None) or [])


def label_names(train, class_names: list[str], expected: Optional[list[str]] = None, column: str = "label") -> list[str]:
    """The label set, in id order: the user's --labels, else the dataset's ClassLabel names, else the distinct train
    values sorted (as numbers when they are numbers: 2 before 10). Fewer than two classes is an error."""
    if expected:
        names = [label_key(name, []) for name in expected]  # "1.0" and 1 name the same label as the data's 1.0
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise UserError(f"--labels names {', '.join(repeated)} more than once: give each label once")
        origin = "--labels gives"
    elif class_names:
        names, origin = list(class_names), "the dataset's label feature has"
    else:
        values = {value for value in train[column] if value is not None}
        numeric = all(isinstance(value, Number) and not isinstance(value, bool) for value in values)
        names = [label_key(value, []) for value in sorted(values)] if numeric else sorted(str(value) for value in values)
        origin = "the train split has"
    if len(names) < 2:
        raise UserError(f"{origin} {len(names)} distinct label(s) ({names}); classification needs at least 2: "
                        f"use data with two or more classes")
    return names


def label_key(value, class_names: list[str]) -> str:
    """How one raw label value is named: a ClassLabel id becomes its name, anything else its text, with whole
    numbers written alike however the file stored them (1, 1.0 and "1.0" are all "1")."""
    if class_names and isinstance(value, int) and value >= 0:
        return class_names[value]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str) and re.fullmatch(r"-?\d+\.0+", value.strip()):
        return value.strip().split(".")[0]
    return str(value)


def _sorted_names(names) -> list[str]:
    """Label names sorted as numbers when they all are numbers (2 before 10), else as text."""
    try:
        return sorted(names, key=float)
    except ValueError:
        return sorted(names)


def encode_labels(splits, names: list[str], class_names: list[str], column: str = "label"):
    """Every split's labels -> ids into `names`, as a ClassLabel column. A value outside the set is an error."""
    from datasets import ClassLabel

    index = {name: i for i, name in enumerate(names)}
    for split_name, split in splits.items():
        blank = next((i for i, value in enumerate(split[column]) if value is None or value == ""), None)
        if blank is not None:
            raise UserError(f"row {blank + 1} of the {split_name} split has no label: fill it in or remove the row")
    found = {label_key(value, class_names) for split in splits.values() for value in split[column]}
    outside = sorted(found - set(index))
    if outside:  # the suggested --labels is the one that works: the expected set plus what the data holds
        full = _sorted_names(set(names) | found)
        raise UserError(f"label {outside[0]!r} is not among the expected labels {names}: fix the data or pass the "
                        f"full set, --labels {' '.join(full)}")

    def encode(batch):  # (values of any type: a csv may read 1, 2 as int in one file, "1" or 1.0 in another)
        return {column: [index[label_key(value, class_names)] for value in batch[column]]}

    splits = splits.map(encode, batched=True, desc="labels")
    return splits.cast_column(column, ClassLabel(names=names))


def labelled_splits(raw, key_column: str, expected: Optional[list[str]] = None, seed: int = 42):
    """Columns already picked (`label` plus the inputs) -> (train/validation/test with label ids, label names, notes).

    Unlabelled splits are dropped and missing ones carved from train (`sources.make_splits`, deduplicated on
    `key_column`); the label set comes from train (or --labels) and every split is encoded against it.
    """
    from finetune.data.sources import make_splits

    feature = raw["train"].features["label"]
    if type(feature).__name__ not in ("Value", "ClassLabel") or getattr(feature, "dtype", "") in ("binary", "large_binary"):
        kind = getattr(feature, "dtype", None) or type(feature).__name__.lower()
        raise UserError(f"the label column holds {kind} values; a label is one string or number per example: pass "
                        f"--label_column with the column of labels")
    class_names = class_names_of(raw["train"])
    splits, notes = make_splits(raw, seed=seed, key_column=key_column, labelled=is_labelled)
    names = label_names(splits["train"], class_names, expected)
    return encode_labels(splits, names, class_names), names, notes
