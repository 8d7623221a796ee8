"""Where examples come from: a Hub dataset name, a local file, or a corpus a package carries.

Every source ends as a `datasets.DatasetDict` with train / validation / test. A dataset's own splits are used
where it has them (an unlabelled split, like SST-2's hidden test labels, does not count); the missing ones are
carved from train, deterministically from the seed, after removing duplicate examples so that no test
example is also a training example.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from finetune.core.environment import is_offline
from finetune.core.errors import UserError
from finetune.data.provenance import Provenance, use_packaged

LOCAL_FORMATS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}


def load_local_file(path: Path, split: str = "train"):
    """A csv / tsv / json / jsonl / parquet / txt file as a DatasetDict with one split (train).

    TSV is read as GLUE writes it: tab-separated with no quoting (a quote character is just text).
    """
    return read_local_file(path, split)[0]


def read_local_file(path: Path, split: str = "train"):
    """(`load_local_file`'s DatasetDict, a note of where it came from and what was detected on the way).

    What the name does not say is found from the content and said in the note: the encoding (`detect_encoding`),
    a `.csv` that is really tab-separated, and the format of a file named without a known extension
    (`eng.train`, `data`: `sniff_format`).
    """
    from datasets import load_dataset

    if path.stat().st_size == 0:
        raise UserError(f"{path} is empty (0 bytes): point --dataset at a file with examples")
    fmt = local_format(path)
    if fmt.builder == "conll":
        raise UserError(
            f"{path} holds CoNLL token data (`word ... tag` per line, detected from its content): tag it "
            f"with finetune train token_classification --dataset {path}"
        )
    check_local_file(path, fmt.builder, fmt.options.get("encoding", "utf-8"))
    note = f"local file {path}" + (f" ({'; '.join(fmt.detected)})" if fmt.detected else "")
    try:
        return load_dataset(fmt.builder, data_files={split: str(path)}, **fmt.options), note
    except Exception as err:  # pyarrow / pandas parse errors come in many types
        raise UserError(f"could not read {path} as {fmt.builder}: {first_line(err)}; check the file's format") from None


@dataclass
class LocalFormat:
    """How a local file is read: the `datasets` builder (csv / json / parquet / text, or conll), its options
    (delimiter, quoting, encoding), and what was detected rather than told by the name, for the run's notes."""

    builder: str
    options: dict = field(default_factory=dict)
    detected: list = field(default_factory=list)


def local_format(path: Path) -> LocalFormat:
    """The extension when it names a format; the content when it does not (or when a .csv / .txt says otherwise)."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return LocalFormat("parquet")
    encoding, detected = detect_encoding(path)
    fmt = LocalFormat(LOCAL_FORMATS.get(suffix, ""), {} if encoding == "utf-8" else {"encoding": encoding}, detected)
    if suffix == ".tsv":
        fmt.options.update(delimiter="\t", quoting=3)  # 3: csv.QUOTE_NONE
    elif suffix == ".csv":
        delimiter = other_delimiter(head_lines(path, encoding))
        if delimiter:
            fmt.options["delimiter"] = delimiter
            fmt.detected.append(f"{DELIMITER_NAMES[delimiter]}, not comma-separated: detected from its lines")
    elif suffix not in LOCAL_FORMATS or suffix == ".txt":
        builder, options, seen = sniff_format(path, encoding)
        if suffix == ".txt" and builder in ("text", "conll"):  # plain lines, as the name says
            return fmt
        fmt.builder = builder
        fmt.options.update(options)
        fmt.detected.insert(0, f"read as {seen}: detected from its content, the name {path.name!r} does not say")
    return fmt


# How text files are read when UTF-8 fails: cp1252 (Windows' Western European, what Excel writes) is tried
# before latin-1, which decodes any byte at all and so is the last resort.
FALLBACK_ENCODINGS = ("cp1252", "latin-1")
DELIMITER_NAMES = {"\t": "tab-separated", ";": "semicolon-separated", "|": "pipe-separated", ",": "comma-separated"}


def detect_encoding(path: Path) -> tuple[str, list]:
    """(the encoding to read `path` with, [a note when it is not plain UTF-8]).

    UTF-8 when the whole file decodes as UTF-8 (with a byte order mark: utf-8-sig, so the mark does not stick
    to the first column's name); else the first of FALLBACK_ENCODINGS that decodes it. A file with NUL bytes
    and no UTF-16 mark is binary, not text: one line, not a decoder's traceback.
    """
    import codecs

    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and _decodes(path, "utf-16"):
        return "utf-16", ["read as UTF-16 (its byte order mark says so)"]
    if b"\0" in head:
        raise UserError(
            f"{path} is not a text file (it holds NUL bytes): give a csv / tsv / jsonl / txt / parquet file of examples"
        )
    if head.startswith(codecs.BOM_UTF8):
        return (
            ("utf-8-sig", ["read as UTF-8 with a byte order mark"]) if _decodes(path, "utf-8-sig") else _fallback(path)
        )
    return ("utf-8", []) if _decodes(path, "utf-8") else _fallback(path)


def _fallback(path: Path) -> tuple[str, list]:
    encoding = next(e for e in FALLBACK_ENCODINGS if _decodes(path, e))  # latin-1 always decodes
    return encoding, [f"read as {encoding}, not UTF-8 (some of its bytes are not valid UTF-8)"]


def _decodes(path: Path, encoding: str) -> bool:
    """True if the whole file decodes (read in blocks: a large file is not held in memory)."""
    import codecs

    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                decoder.decode(block)
        decoder.decode(b"", final=True)
        return True
    except UnicodeDecodeError:
        return False


def head_lines(path: Path, encoding: str, count: int = 50) -> list[str]:
    """The first `count` lines (newlines kept), decoded."""
    with open(path, encoding=encoding, errors="replace", newline="") as f:
        return [line for line, _ in zip(f, range(count))]


def other_delimiter(lines: list[str]):
    """The delimiter of a file named .csv that is not comma-separated: its header is one field with commas, and
    the same number (2 or more) of fields with a tab (or ; or |) on every line. None when commas fit."""
    import csv

    lines = [line for line in lines if line.strip()]
    if len(lines) < 2 or len(next(csv.reader(lines[:1]))) > 1:
        return None
    for delimiter in ("\t", ";", "|"):
        counts = {len(row) for row in csv.reader(lines[:-1] if len(lines) > 2 else lines, delimiter=delimiter) if row}
        if len(counts) == 1 and counts.pop() > 1:
            return delimiter
    return None


def sniff_format(path: Path, encoding: str) -> tuple[str, dict, str]:
    """(builder, its options, what was seen) from the first lines of a file whose name does not say its format.

    Parquet by its magic bytes; JSON Lines / a JSON array by the first character; CoNLL token data (`word ... tag`,
    the same number of columns on every line, blank lines between sentences, as the shared tasks publish it);
    a csv / tsv by a header of column names and the same number of fields on every line; else one text per line.
    """
    import json

    with open(path, "rb") as f:
        if f.read(4) == b"PAR1":
            return "parquet", {}, "parquet (its magic bytes)"
    lines = head_lines(path, encoding)
    content = [line for line in lines if line.strip()]
    first = content[0].lstrip() if content else ""
    if first.startswith("["):
        return "json", {}, "a JSON array"
    if first.startswith("{"):
        try:
            if isinstance(json.loads(first), dict):
                return "json", {}, "JSON Lines"
        except json.JSONDecodeError:
            pass
    if looks_like_conll(lines):
        return "conll", {}, f"CoNLL, `word ... tag` per line ({len(content[-1].split())} columns)"
    delimiter = header_delimiter(content)
    if delimiter:
        return "csv", {"delimiter": delimiter}, f"a csv file ({DELIMITER_NAMES[delimiter]}, with a header)"
    return "text", {}, "plain text (one example per line)"


def looks_like_conll(lines: list[str]) -> bool:
    """`word ... tag` lines, 2 or more whitespace-separated columns, the same count on every line, and sentences
    separated by blank lines (or -DOCSTART-): what CoNLL-2000/2002/2003 and most shared tasks distribute."""
    rows = [line.split() for line in lines if line.strip() and not line.startswith("-DOCSTART-")]
    separated = any(not line.strip() for line in lines[1:])
    return bool(rows) and separated and len({len(row) for row in rows}) == 1 and len(rows[0]) >= 2


def header_delimiter(lines: list[str]):
    """The delimiter of delimited text with a header line of column names (`text,label`, `id\tsentence\tlabel`),
    the same number of fields on every line; None for anything else."""
    import csv
    import re

    if len(lines) < 2:
        return None
    for delimiter in (",", "\t", ";", "|"):
        rows = list(csv.reader(lines[:-1] if len(lines) > 2 else lines, delimiter=delimiter))
        header = [name.strip() for name in rows[0]]
        if (
            len(header) > 1
            and all(re.fullmatch(r"[A-Za-z_][\w.-]{0,63}", name) for name in header)
            and {len(row) for row in rows} == {len(header)}
        ):
            return delimiter
    return None


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type when it has none (some library errors are blank)."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def check_local_file(path: Path, builder: str, encoding: str = "utf-8") -> None:
    """Mistakes `datasets` reports badly, found first and named in one line.

    A csv with a header and no rows ("corresponds to no data"); a JSON Lines file with a broken line (datasets
    logs its own line, then raises a generic error without the line number).
    """
    import json

    if builder == "csv":
        with open(path, encoding=encoding, errors="replace") as f:
            lines = [line for line, _ in zip((line for line in f if line.strip()), range(2))]
        if len(lines) == 1:
            raise UserError(f"{path} has a header ({lines[0].strip()[:80]!r}) and no rows: add data rows below it")
        if not lines:
            raise UserError(f"{path} is empty: add a header line and data rows")
    elif builder == "json":
        with open(path, encoding=encoding, errors="replace") as f:
            text = f.read()
        if not text.strip():
            raise UserError(f"{path} is empty: add one JSON object per line")
        if text.lstrip().startswith("["):  # one JSON array: the json builder reads it whole
            return
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                json.loads(line)
            except json.JSONDecodeError as err:
                if path.suffix.lower() == ".json" and _is_one_document(text):
                    return
                raise UserError(
                    f"{path} line {number} is not valid JSON ({err.msg}): fix or remove that line"
                ) from None


def _is_one_document(text: str) -> bool:
    import json

    try:
        json.loads(text)
        return True
    except json.JSONDecodeError:
        return False


def load_hub_dataset(name: str, config: Optional[str] = None):
    from datasets import load_dataset

    try:
        return load_dataset(name, config)
    except Exception as err:
        if is_offline():
            raise UserError(
                f"dataset {name!r} is not a local file and is not in "
                "the local Hugging Face cache, and HF_HUB_OFFLINE=1 "
                "forbids downloading it: pass a local csv/jsonl/parquet "
                "file, an offline alias, or unset HF_HUB_OFFLINE"
            ) from None
        raise UserError(
            f"could not load dataset {name!r}{f' (config {config!r})' if config else ''} "
            f"from the Hub: {first_line(err)}"
        ) from None


# GLUE's own TSV file names -> our split names (MNLI has matched and mismatched dev/test sets).
TSV_SPLITS = {
    "train": "train",
    "dev": "validation",
    "dev_matched": "validation",
    "dev_mismatched": "validation_mismatched",
    "test": "test",
    "test_matched": "test",
    "test_mismatched": "test_mismatched",
}


def load_tsv_folder(path: Path):
    """A folder of TSV files named like GLUE's (train.tsv, dev.tsv, test.tsv, dev_matched.tsv, ...)."""
    from datasets import DatasetDict

    found = {TSV_SPLITS[f.stem]: f for f in sorted(path.glob("*.tsv")) if f.stem in TSV_SPLITS}
    if "train" not in found:
        raise UserError(
            f"the folder {path} has TSV files but no train.tsv: name them like GLUE's (train.tsv, dev.tsv, test.tsv)"
        )
    return DatasetDict({name: load_local_file(file, split=name)[name] for name, file in found.items()})


def load_saved_folder(path: Path):
    """A folder written by `datasets`' save_to_disk (a Dataset or a DatasetDict)."""
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except Exception as err:
        raise UserError(f"could not load the save_to_disk folder {path}: {str(err).splitlines()[0]}") from None
    return (
        loaded
        if isinstance(loaded, DatasetDict)
        else DatasetDict({"train": loaded})
        if isinstance(loaded, Dataset)
        else loaded
    )


def is_saved_folder(path: Path) -> bool:
    return (path / "dataset_dict.json").is_file() or (
        (path / "state.json").is_file() and (path / "dataset_info.json").is_file()
    )


def load_any(name: str, packaged: dict, config: Optional[str] = None):
    """Resolve a dataset name: a packaged alias (callable returning a DatasetDict), a local path, or a Hub name.

    Local folders: one written by save_to_disk, a folder of GLUE-style TSV files, or any folder `load_dataset`
    reads (csv/json/parquet files named by split). `config` picks a Hub dataset's configuration (nyu-mll/glue mrpc).
    Returns (DatasetDict, the Provenance: packaged, local or hub, and a note in words).
    """

    if use_packaged(name, packaged, config):
        dataset, note = packaged[name]()
        return dataset, Provenance("packaged", note)
    path = Path(os.path.expanduser(name))
    if path.is_file():
        dataset, note = read_local_file(path)
        return dataset, Provenance("local", note)
    if path.is_dir():
        if is_saved_folder(path):
            return load_saved_folder(path), Provenance("local", f"local save_to_disk folder {path}")
        if any(path.glob("*.tsv")):
            return load_tsv_folder(path), Provenance("local", f"local TSV folder {path}")
        from datasets import load_dataset

        ignored = sorted(
            str(p.relative_to(path))
            for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() not in LOCAL_FORMATS and not p.name.startswith(".")
        )
        skipped = (
            f" (not data files, ignored: {', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''})"
            if ignored
            else ""
        )
        try:
            return load_dataset(str(path)), Provenance("local", f"local folder {path}{skipped}")
        except Exception as err:
            raise UserError(f"could not load the folder {path} as a dataset: {first_line(err)}") from None
    if name.startswith((".", "/", "~")) or name.endswith(tuple(LOCAL_FORMATS)):
        raise UserError(f"dataset file {name} does not exist: check the path")
    note = f"Hugging Face Hub dataset {name}" + (f" ({config})" if config else "")
    return load_hub_dataset(name, config), Provenance("hub", note)


def make_splits(
    dataset_dict,
    seed: int,
    key_column,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    labelled=None,
    aliases: Optional[dict] = None,
    extra: tuple = (),
):
    """Train / validation / test from whatever splits a source has.

    `key_column`: the column (or list of columns, e.g. a sentence pair) that identifies an example when removing
    duplicates. `labelled(split) -> bool` tells usable splits from unlabelled ones (dropped, with a note).
    `aliases` maps more split names onto ours (MNLI: validation_matched -> validation); `extra` names splits kept
    after the three (MNLI's validation_mismatched, reported besides the test split).
    Returns (DatasetDict, notes).
    """
    from datasets import DatasetDict

    notes = []
    splits = {}
    aliases = {
        "train": "train",
        "validation": "validation",
        "valid": "validation",
        "dev": "validation",
        "test": "test",
        **{name: name for name in extra},
        **(aliases or {}),
    }
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
        raise UserError(
            f"the dataset has no labelled train split (found: {', '.join(dataset_dict) or 'none'}): provide one"
        )
    if len(splits["train"]) == 0:
        raise UserError("the dataset is empty (0 training rows): check the file or the filters")

    for name, split in splits.items():
        _check_no_empty_keys(split, name, key_column)
    missing = [s for s in ("validation", "test") if s not in splits]
    if missing:
        train = _deduplicate(splits["train"], key_column)
        if len(train) < len(splits["train"]):
            notes.append(
                f"removed {len(splits['train']) - len(train)} duplicate "
                f"rows (same {_key_name(key_column)}) before splitting"
            )
        removed = len(splits["train"]) - len(train)
        if len(train) < MIN_ROWS_TO_SPLIT:
            after = (
                f" ({len(train)} distinct examples remain after removing {removed} duplicate rows)" if removed else ""
            )
            raise UserError(
                f"the dataset has {len(train)} distinct {_key_name(key_column)} row(s){after}: too few to carve "
                f"validation and test splits from (at least {MIN_ROWS_TO_SPLIT}); add examples, or give "
                f"validation and test splits of its own"
            )
        fractions = {"validation": validation_fraction, "test": test_fraction}
        for name in missing:
            # each carved split takes its fraction of the original train size
            share = fractions[name] * len(splits["train"]) / len(train)
            if len(train) < 2 or share >= 1 or len(train) - math.ceil(share * len(train)) < 1:
                raise UserError(
                    f"only {len(train)} distinct examples remain after removing {removed} duplicate rows: too "
                    f"few to carve a {name} split from train; use more distinct examples or give the dataset "
                    f"its own validation and test splits"
                )
            parts = train.train_test_split(test_size=share, seed=seed, shuffle=True)
            train, splits[name] = parts["train"], parts["test"]
            notes.append(f"{name} split carved from train ({len(splits[name])} rows, seed {seed})")
        splits["train"] = train
    for name in ("train", "validation", "test"):
        if len(splits[name]) == 0:
            raise UserError(f"the {name} split is empty: use a larger dataset or different split fractions")
    names = ("train", "validation", "test", *(name for name in extra if name in splits))
    return DatasetDict({k: splits[k] for k in names}), notes


def check_text_column(raw, column: str, flag: str = "--text_column") -> None:
    """The text column must hold strings: numbers, lists or mappings would reach the tokenizer and fail there."""
    for split_name, split in raw.items():
        feature = split.features[column]
        dtype = getattr(feature, "dtype", None)
        if dtype not in ("string", "large_string", "null"):
            kind = dtype or type(feature).__name__.lower()
            raise UserError(
                f"the text column {column!r} ({split_name} split) holds {kind} values, not text: pass {flag} "
                f"with the column that holds the texts, or quote the values in the file"
            )


MIN_ROWS_TO_SPLIT = 10  # a few rows in each carved split, and training data left over


def _check_no_empty_keys(split, split_name: str, columns) -> None:
    """A missing or blank input (an empty CSV cell) would reach the tokenizer as None: name its row instead."""
    for column in [columns] if isinstance(columns, str) else list(columns):
        for i, value in enumerate(column_values(split, column)):
            if value is None or (isinstance(value, str) and not value.strip()):
                raise UserError(
                    f"row {i + 1} of the {split_name} split has an empty {column!r} (row {i + 1} of the data, "
                    f"line {i + 2} of a CSV file with a header): fill it in or remove the row"
                )


def column_values(split, column: str) -> list:
    """A column's values as a list, read at once: iterating datasets' Column reads row by row (a hundred times
    slower: seconds per pass over the 23,000 packaged tweets)."""
    return split[column][:]


def _key_name(columns) -> str:
    return " + ".join([columns] if isinstance(columns, str) else list(columns))


def example_keys(split, columns):
    """One hashable key per row from the column (or columns) that identify an example."""
    columns = [columns] if isinstance(columns, str) else list(columns)
    values = zip(*(column_values(split, column) for column in columns))
    return [tuple(_hashable(v) for v in row) for row in values]


def _hashable(value):
    """Lists and mappings (a multi-label list, or a malformed cell that later checks name) as hashable keys."""
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), _hashable(v)) for k, v in value.items()))
    return value


def _deduplicate(split, columns):
    seen = set()
    keep = []
    for i, key in enumerate(example_keys(split, columns)):
        if key not in seen:
            seen.add(key)
            keep.append(i)
    return split.select(keep) if len(keep) < len(split) else split
