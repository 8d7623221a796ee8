"""Labelled splits, for every modality: columns, unlabelled splits, the label set and its encoding.

A loader (text.py, images.py) turns its source into a DatasetDict, then hands it here:

    columns = {"text": (text_column, "--text_column"), "label": (label_column, "--label_column")}
    raw = pick_columns(raw, dataset, columns)
    splits, label_names, notes = labelled_splits(raw, key_column="text", expected=labels, seed=seed)

The steps are separate functions so that later label kinds reuse them: `label_names` derives the set from a split,
`encode_labels` maps values to ids, `label_key` says how one raw value is named. A multi-label or regression task
brings its own `label_names` / encoder; token classification encodes each tag with `label_key` and the same index.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from numbers import Number
from typing import Optional

from finetune.core.errors import UserError
from finetune.data.provenance import Provenance
from finetune.data.sources import column_values, example_keys, make_splits

# Values that stand for "no label": SST-2 and GLUE hide their test labels as -1, other datasets leave them empty.
MISSING = (None, -1)


@dataclass
class ClassificationData:
    splits: object  # DatasetDict train / validation / test; column `label` holds ClassLabel ids 0..K-1
    label_names: list[str]
    provenance: Provenance  # where the data came from (packaged, local or hub, and a note)
    notes: list[str] = field(default_factory=list)  # what loading found and did (warnings, carved splits)


def pick_columns(raw, dataset: str, columns: dict[str, tuple[str, str]]):
    """Keep only the wanted columns, renamed to what the rest of the toolkit reads.

    `columns` maps the canonical name to (the dataset's column, the flag that sets it), e.g.
    {"label": ("stars", "--label_column")}. A column missing from any split is a one-line error naming it, the
    columns that exist and the flag. One column named by two flags (text and label both `text`) is an error too:
    the model would be handed its answer as its input.
    """
    seen: dict = {}
    for column, flag in columns.values():
        if column in seen and seen[column] != flag:
            raise UserError(
                f"{seen[column]} and {flag} both name the column {column!r}: the input and the label must "
                f"be different columns; pass each flag its own column"
            )
        seen.setdefault(column, flag)
    for split_name, split in raw.items():
        for column, flag in columns.values():
            if column not in split.column_names:
                raise UserError(
                    f"dataset {dataset!r} ({split_name} split) has no column {column!r} (columns: "
                    f"{', '.join(split.column_names)}): pass {flag} NAME"
                )
    raw = raw.select_columns([column for column, _ in columns.values()])
    for canonical, (column, _) in columns.items():
        if column != canonical:
            raw = raw.rename_column(column, canonical)
    return raw


def is_labelled(split, column: str = "label") -> bool:
    """False for a split whose labels are all missing (hidden test labels): it is dropped, not trained on."""
    return any(value not in MISSING for value in column_values(split, column))


def class_names_of(split, column: str = "label") -> list[str]:
    """The names a `ClassLabel` column carries (in the dataset's order), else []."""
    return list(getattr(split.features[column], "names", None) or [])


def label_names(
    train, class_names: list[str], expected: Optional[list[str]] = None, column: str = "label"
) -> list[str]:
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
        values = {value for value in column_values(train, column) if value is not None}
        numeric = all(isinstance(value, Number) and not isinstance(value, bool) for value in values)
        names = (
            [label_key(value, []) for value in sorted(values)] if numeric else sorted(str(value) for value in values)
        )
        origin = "the train split has"
    if len(names) < 2:
        raise UserError(
            f"{origin} {len(names)} distinct label(s) ({names}); classification needs at least 2: "
            f"use data with two or more classes"
        )
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


def check_label_spellings(splits, column: str = "label") -> None:
    """Text labels that differ only in case or surrounding spaces ("positive", "Positive", "positive ") are one
    label written several ways: as classes of their own they would split it silently. One line names them."""
    spellings: dict[str, set] = {}
    for split in splits.values():
        for value in column_values(split, column):
            if isinstance(value, str):
                spellings.setdefault(value.strip().casefold(), set()).add(value)
    clashes = [sorted(found) for found in spellings.values() if len(found) > 1]
    if clashes:
        shown = " and ".join(", ".join(repr(v) for v in found) for found in clashes[:3])
        raise UserError(
            f"labels {shown} differ only in case or surrounding spaces: write each label one way in the data "
            f"(e.g. strip the spaces and lowercase them), or they would train as separate classes"
        )


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
        blank = next((i for i, value in enumerate(column_values(split, column)) if value is None or value == ""), None)
        if blank is not None:
            raise UserError(f"row {blank + 1} of the {split_name} split has no label: fill it in or remove the row")
    found = {label_key(value, class_names) for split in splits.values() for value in column_values(split, column)}
    outside = sorted(found - set(index))
    if outside:  # the suggested --labels is the one that works: the expected set plus what the data holds
        full = _sorted_names(set(names) | found)
        raise UserError(
            f"label {outside[0]!r} is not among the expected labels {names}: fix the data or pass the "
            f"full set, --labels {' '.join(full)}"
        )

    def encode(batch):  # (values of any type: a csv may read 1, 2 as int in one file, "1" or 1.0 in another)
        return {column: [index[label_key(value, class_names)] for value in batch[column]]}

    splits = splits.map(encode, batched=True, desc="labels")
    return splits.cast_column(column, ClassLabel(names=names))


def check_no_missing_labels(raw, column: str = "label") -> None:
    """A missing label (an empty cell, a null) in a labelled split, named by its row in the source as the user
    sees it: before duplicates are removed and splits are carved (a row number of a shuffled split finds nothing)."""
    for split_name, split in raw.items():
        values = column_values(split, column)
        if not any(value not in MISSING for value in values):
            continue  # all hidden (SST-2's test labels): the split is dropped, not an error
        blank = next((i for i, value in enumerate(values) if value is None or value == ""), None)
        if blank is not None:
            raise UserError(
                f"row {blank + 1} of the {split_name} split has no label (row {blank + 1} of the file, line "
                f"{blank + 2} of a CSV file with a header): fill it in or remove the row"
            )


def labelled_splits(
    raw,
    key_column,
    expected: Optional[list[str]] = None,
    seed: int = 42,
    extra: tuple = (),
    aliases: Optional[dict] = None,
):
    """Columns already picked (`label` plus the inputs) -> (train/validation/test with label ids, label names, notes).

    Unlabelled splits are dropped and missing ones carved from train (`sources.make_splits`, deduplicated on
    `key_column`); the label set comes from train (or --labels) and every split is encoded against it.
    """

    feature = raw["train"].features["label"]
    if type(feature).__name__ not in ("Value", "ClassLabel") or getattr(feature, "dtype", "") in (
        "binary",
        "large_binary",
    ):
        kind = getattr(feature, "dtype", None) or type(feature).__name__.lower()
        raise UserError(
            f"the label column holds {kind} values; a label is one string or number per example: pass "
            f"--label_column with the column of labels"
        )
    class_names = class_names_of(raw["train"])
    check_label_spellings(raw)
    check_no_missing_labels(raw)
    splits, notes = make_splits(
        raw, seed=seed, key_column=key_column, labelled=is_labelled, extra=extra, aliases=aliases
    )
    names = label_names(splits["train"], class_names, expected)
    return encode_labels(splits, names, class_names), names, notes


# --- Problem types: one label, several labels, or a score ----------------------------------------------------

PROBLEM_TYPES = ("single_label", "multi_label", "regression")
# The names Hugging Face models read from config.problem_type to choose their loss.
HF_PROBLEM_TYPES = {
    "single_label": "single_label_classification",
    "multi_label": "multi_label_classification",
    "regression": "regression",
}


def decide_problem_type(
    train, requested: str, label_columns: list[str], delimiter: Optional[str], expected: Optional[list] = None
) -> tuple[str, str]:
    """(problem type, why) from the `label` column of the train split: several 0/1 columns, lists or delimited
    strings mean multi-label; a label set given with --labels means classes (labels written 0.0 / 1.0 too), and so
    do floats that are all whole numbers (a file that wrote 0/1 as 0.0/1.0; `why` names the flag for a score);
    other floats regression; anything else one label per example."""
    if requested != "auto":
        return requested, "as asked"
    if len(label_columns) > 1:
        return "multi_label", f"{len(label_columns)} label columns"
    feature = train.features["label"]
    if type(feature).__name__ in ("Sequence", "List", "LargeList"):
        return "multi_label", "the label column holds lists"
    if delimiter is not None:
        return "multi_label", f"--label_delimiter {delimiter!r}"
    if expected:
        return "single_label", "--labels names the classes"
    if getattr(feature, "dtype", "").startswith("float"):
        values = sorted({value for value in column_values(train, "label") if value is not None})
        if values and all(math.isfinite(value) and value.is_integer() for value in values):
            shown = ", ".join(f"{value:g}" for value in values[:5]) + (", ..." if len(values) > 5 else "")
            return "single_label", (
                f"the label column holds only whole numbers ({shown}), written as decimals: "
                f"trained as {len(values)} classes; pass --problem_type regression to predict a score"
            )
        return "regression", "the label column holds floating-point numbers"
    return "single_label", "one label per example"


def conflicting_labels(split, key_columns, label_columns=("label",)) -> tuple[int, Optional[object]]:
    """How many distinct examples appear with two or more different labels, and one of them (for the warning)."""

    seen: dict = {}
    for key, label in zip(example_keys(split, key_columns), example_keys(split, label_columns)):
        seen.setdefault(key, set()).add(label)
    clashes = [key for key, labels in seen.items() if len(labels) > 1]
    return len(clashes), (clashes[0] if clashes else None)


def _number(value):
    """A label as a float, or None when it is missing; anything else is not a number (raises ValueError)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise ValueError
    return float(value)


def regression_splits(raw, key_column, seed: int = 42, extra: tuple = (), aliases: Optional[dict] = None):
    """Columns already picked (`label` a score) -> (splits with float `label`, ["score" name], notes)."""
    from datasets import Value

    for split_name, split in raw.items():
        for row, value in enumerate(column_values(split, "label"), start=1):
            try:
                _number(value)
            except (TypeError, ValueError):
                raise UserError(
                    f"regression labels must be numbers, but row {row} of the {split_name} split has {value!r}: "
                    f"fix the data, or use --problem_type single_label for named classes"
                ) from None
    raw = raw.map(lambda batch: {"label": [_number(v) for v in batch["label"]]}, batched=True, desc="labels")
    raw = raw.cast_column("label", Value("float32"))
    # hidden test labels: GLUE writes -1 for STS-B's test scores, other datasets leave them empty
    labelled = lambda split: any(v is not None and v != -1 for v in column_values(split, "label"))
    for split_name, split in raw.items():
        if labelled(split):  # (a split with no scores at all is dropped by make_splits, and says so)
            check_scores(column_values(split, "label"), split_name)
    splits, notes = make_splits(raw, seed=seed, key_column=key_column, labelled=labelled, extra=extra, aliases=aliases)
    return splits, ["score"], notes


def check_scores(values, split_name: str) -> None:
    """Every target of a labelled regression split is a finite number: an empty or NaN one would be dropped (a row
    lost without a word) and an infinite one makes the loss infinite (it looks like a too-high learning rate)."""
    bad = [(row, value) for row, value in enumerate(values, start=1) if value is None or not math.isfinite(value)]
    if bad:
        shown = ", ".join(
            f"row {row}: {'empty/NaN' if value is None or math.isnan(value) else value}" for row, value in bad[:5]
        )
        raise UserError(
            f"{len(bad)} regression target(s) of the {split_name} split are empty, NaN or infinite ({shown}"
            f"{', ...' if len(bad) > 5 else ''}; rows count from 1 below a CSV header): put a finite number "
            f"there or remove those rows"
        )


def to_label_sets(raw, label_columns: list[str], delimiter: Optional[str]):
    """Any multi-label layout -> a `label` column of lists of label names.

    Layouts: several 0/1 columns (`label_columns`, one per label: the label applies where the value is 1/true);
    one column of lists (names or ClassLabel ids); one column of delimited strings ("sports;politics").
    """
    if len(label_columns) > 1:

        def from_columns(batch):
            rows = zip(*(batch[column] for column in label_columns))
            return {
                "label": [[name for name, value in zip(label_columns, row) if _truthy(value, name)] for row in rows]
            }

        return raw.map(from_columns, batched=True, remove_columns=label_columns, desc="labels")
    train_feature = raw["train"].features["label"]
    inner = getattr(train_feature, "feature", None)
    class_names = list(getattr(inner, "names", None) or [])

    def to_lists(batch):
        out = []
        for value in batch["label"]:
            if value is None:  # an empty cell: no label applies to this example
                out.append([])
            elif isinstance(value, list):
                out.append([label_key(v, class_names) for v in value])
            elif delimiter is not None:
                out.append([part.strip() for part in str(value).split(delimiter) if part.strip()])
            else:
                raise UserError(
                    f"multi-label needs lists, several 0/1 columns or --label_delimiter, but the label column "
                    f"holds {value!r}: pass --label_delimiter ';' (or the separator your data uses)"
                )
        return {"label": out}

    from datasets import Sequence, Value

    if type(train_feature).__name__ not in ("Sequence", "List", "LargeList"):
        raw = raw.cast_column("label", Value("string"))
    mapped = raw.map(to_lists, batched=True, desc="labels", features=None)
    return mapped.cast_column("label", Sequence(Value("string")))


def _truthy(value, column: str) -> bool:
    if value in (1, True, "1", "true", "True", 1.0):
        return True
    if value in (0, False, "0", "false", "False", 0.0, None, ""):
        return False
    raise UserError(f"the label column {column!r} holds {value!r}: several label columns must hold 0 or 1")


def multi_label_splits(
    raw,
    key_column,
    label_columns: list[str],
    delimiter: Optional[str],
    expected: Optional[list[str]] = None,
    seed: int = 42,
    extra: tuple = (),
    aliases: Optional[dict] = None,
):
    """Columns picked (the label column(s) plus the inputs) -> (splits with a 0/1 float vector `label`, names,
    notes)."""
    from datasets import Sequence, Value

    raw = to_label_sets(raw, label_columns, delimiter)
    # every row counts as labelled: an empty set is an answer ("none of these"); all-empty is caught below
    splits, notes = make_splits(raw, seed=seed, key_column=key_column, extra=extra, aliases=aliases)
    if expected:
        names = [str(name) for name in expected]
    elif len(label_columns) > 1:
        names = list(label_columns)
    else:
        names = sorted({name for labels in column_values(splits["train"], "label") if labels for name in labels})
    if not any(labels for split in splits.values() for labels in column_values(split, "label")):
        raise UserError(
            "the multi-label column holds an empty label set in every row: check --label_column and "
            "--label_delimiter (no row has any label to learn)"
        )
    if len(names) < 2:
        raise UserError(f"the train split has {len(names)} distinct label(s) ({names}); multi-label needs at least 2")
    index = {name: i for i, name in enumerate(names)}

    def encode(batch):
        rows = []
        for labels in batch["label"]:
            row = [0.0] * len(names)
            for name in labels or []:
                if name not in index:
                    raise UserError(
                        f"label {name!r} is not among the expected labels {names}: fix the data or pass "
                        f"--labels with the full set"
                    )
                row[index[name]] = 1.0
            rows.append(row)
        return {"label": rows}

    splits = splits.map(encode, batched=True, desc="labels")
    return splits.cast_column("label", Sequence(Value("float32"), length=len(names))), names, notes
