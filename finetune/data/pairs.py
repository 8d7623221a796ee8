"""Text pairs for sequence-to-sequence tasks (translation, summarization): a source text and the target text a model
learns to write from it.

The shapes people have, all ending as train / validation / test with string columns `source` and `target` (and
`id` when the data has one):

    run_translation's JSON lines   {"translation": {"en": "...", "fr": "..."}}   --source_lang en --target_lang fr
    two columns (csv, tsv, jsonl, parquet, a Hub dataset)   --source_column / --target_column (summarization's
                                   --text_column / --summary_column map to the same two parameters)
    known Hub datasets             wmt16 ro-en, opus_books en-fr, cnn_dailymail 3.0.0, xsum, samsum: their
                                   configuration and columns are filled in (KNOWN_HUB) and said in the notes
    packaged offline defaults      kjv-web (King James Bible -> World English Bible, split by book), conll-headlines
                                   (CoNLL-2003 Reuters article bodies -> their headlines)

A missing validation or test split is carved from train by `sources.make_splits` (seeded, duplicates removed
first), and the notes say so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from finetune.core.errors import UserError
from finetune.data import bible, headlines, packaged
from finetune.data.provenance import Provenance
from finetune.data.sources import check_text_column, load_any, make_splits

TASKS = ("translation", "summarization")

# Columns read when none are named, per task: what run_translation / run_summarization users name them most.
DEFAULT_COLUMNS = {"translation": ("source", "target"), "summarization": ("text", "summary")}

# Hub datasets people start from, by the last part of their name (wmt16 and wmt/wmt16 alike): the configuration
# used when none is given and where the pair is. The language direction is the one the Hugging Face examples train.
KNOWN_HUB = {
    "wmt16": {"config": "ro-en", "source_lang": "en", "target_lang": "ro"},
    "opus_books": {"config": "en-fr", "source_lang": "en", "target_lang": "fr"},
    "cnn_dailymail": {"config": "3.0.0", "source_column": "article", "target_column": "highlights"},
    "xsum": {"source_column": "document", "target_column": "summary"},
    "samsum": {"source_column": "dialogue", "target_column": "summary"},
}

# The packaged offline defaults: name -> (reader returning (DatasetDict of source/target/id, note), source and
# target names).
PACKAGED_PAIRS = {
    packaged.KJV_WEB: bible.packaged_kjv_web,
    packaged.CONLL_HEADLINES: headlines.packaged_conll_headlines,
}
PACKAGED_NAMES = {packaged.KJV_WEB: ("KJV", "WEB"), packaged.CONLL_HEADLINES: ("article", "headline")}


@dataclass
class PairData:
    """splits: DatasetDict train / validation / test with string columns `source` and `target` (and `id` where the
    data has one); provenance: where it came from; notes: what loading found and did (the recipe prints them);
    source_name / target_name: what the two sides are ("en" / "fr", "KJV" / "WEB", "article" / "headline")."""

    splits: object
    provenance: Provenance
    notes: list[str] = field(default_factory=list)
    source_name: str = "source"
    target_name: str = "target"


def load_pairs(
    dataset: str,
    *,
    task: str,
    seed: int,
    dataset_config: Optional[str] = None,
    source_column: Optional[str] = None,
    target_column: Optional[str] = None,
    source_lang: Optional[str] = None,
    target_lang: Optional[str] = None,
) -> PairData:
    """Any supported source -> PairData (train / validation / test of `source` -> `target` strings)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    settings = dict(
        dataset_config=dataset_config,
        source_column=source_column,
        target_column=target_column,
        source_lang=source_lang,
        target_lang=target_lang,
    )
    notes = fill_known_hub(dataset, settings)
    dataset_config, source_column, target_column, source_lang, target_lang = settings.values()

    if (
        dataset in PACKAGED_PAIRS
        and not _is_path(dataset)
        and (source_column or target_column or source_lang or target_lang)
    ):
        source_name, target_name = PACKAGED_NAMES[dataset]
        raise UserError(
            f"the packaged corpus {dataset!r} has fixed columns ({source_name} -> {target_name}): drop "
            f"--source_column / --target_column / --source_lang / --target_lang, or point --dataset at your data"
        )
    raw, provenance = load_any(dataset, PACKAGED_PAIRS, dataset_config)
    if provenance.kind == "packaged":
        source_name, target_name = PACKAGED_NAMES[dataset]
    elif _has_translation_column(raw) and not (source_column or target_column):
        raw = translation_records(raw, dataset, source_lang, target_lang)
        source_name, target_name = source_lang, target_lang
    elif source_lang or target_lang:
        columns = ", ".join(next(iter(raw.values())).column_names)
        raise UserError(
            f"--source_lang / --target_lang read a `translation` column of {{language: text}} records, and "
            f"dataset {dataset!r} has none (columns: {columns}): pass --source_column and --target_column instead"
        )
    else:
        default_source, default_target = DEFAULT_COLUMNS[task]
        source_name, target_name = source_column or default_source, target_column or default_target
        raw = two_columns(raw, dataset, task, source_name, target_name)

    raw, dropped = drop_empty_targets(raw, dataset)
    notes += dropped
    splits, split_notes = make_splits(raw, seed=seed, key_column="source")
    return PairData(splits, provenance, notes + split_notes, source_name, target_name)


def fill_known_hub(dataset: str, settings: dict) -> list[str]:
    """For a dataset of KNOWN_HUB, the configuration, direction and columns left unset are filled in (in
    `settings`, in place), and a note says which. A language pair other than the known one is not given the
    known direction (wmt16 de-en is not read as en -> ro): its records' languages must then be named."""
    known = KNOWN_HUB.get(dataset.rstrip("/").rsplit("/", 1)[-1])
    if not known or dataset in PACKAGED_PAIRS or _is_path(dataset):
        return []
    filled = []
    if settings["dataset_config"] is None and "config" in known:
        settings["dataset_config"] = known["config"]
        filled.append(f"configuration {known['config']}")
    unset = not any(settings[k] for k in ("source_column", "target_column", "source_lang", "target_lang"))
    if unset and "source_lang" in known and settings["dataset_config"] == known["config"]:
        settings.update(source_lang=known["source_lang"], target_lang=known["target_lang"])
        filled.append(f"{known['source_lang']} -> {known['target_lang']}")
    if unset and "source_column" in known:
        settings.update(source_column=known["source_column"], target_column=known["target_column"])
        filled.append(f"columns {known['source_column']} -> {known['target_column']}")
    return (
        [f"{dataset}: {', '.join(filled)} (the usual setting for this dataset; pass flags to change)"] if filled else []
    )


def _is_path(name: str) -> bool:
    from pathlib import Path

    return Path(name).expanduser().exists()


def column(split, name: str) -> list:
    """One column as a list, read in one batch (datasets 5's `split[name]` decodes row by row: 60x slower)."""
    return split.select_columns([name])[:][name]


def _has_translation_column(raw) -> bool:
    return all("translation" in split.column_names for split in raw.values())


def translation_records(raw, dataset: str, source_lang: Optional[str], target_lang: Optional[str]):
    """run_translation's shape, {"translation": {"en": ..., "fr": ...}} per row -> `source` / `target` (+ `id`).

    Both languages must be named (the data does not say which way to translate), must be keys of the records,
    and every record must have both: a row without one is named with the keys it has.
    """
    from datasets import Dataset, DatasetDict

    records = {name: column(split, "translation") for name, split in raw.items()}
    keys = sorted({key for split in records.values() for record in split if record for key in record})
    if not source_lang or not target_lang:
        raise UserError(
            f"dataset {dataset!r} holds `translation` records with the languages {', '.join(keys)}: name the "
            f"direction with --source_lang and --target_lang (e.g. --source_lang {keys[0]} --target_lang "
            f"{keys[-1]})"
        )
    if source_lang == target_lang:
        raise UserError(f"--source_lang and --target_lang are both {source_lang!r}: name two different languages")
    for flag, lang in (("--source_lang", source_lang), ("--target_lang", target_lang)):
        if lang not in keys:
            raise UserError(
                f"{flag} {lang!r} is not a language of dataset {dataset!r} (its records have: {', '.join(keys)}): "
                f"pass one of those"
            )
    out = {}
    for name, split in raw.items():
        sources, targets = [], []
        for row, record in enumerate(records[name]):
            record = record or {}
            missing = [lang for lang in (source_lang, target_lang) if record.get(lang) is None]
            if missing:
                has = ", ".join(key for key, value in record.items() if value is not None) or "none"
                raise UserError(
                    f"{name} row {row + 1} of dataset {dataset!r} has no {' and no '.join(map(repr, missing))} "
                    f"text (its translation keys: {has}): give every record both languages or remove that row"
                )
            sources.append(record[source_lang])
            targets.append(record[target_lang])
        columns = {"source": sources, "target": targets}
        if "id" in split.column_names:
            columns["id"] = [str(value) for value in column(split, "id")]
        out[name] = Dataset.from_dict(columns)
    out = DatasetDict(out)
    for side, flag in (("source", "--source_lang"), ("target", "--target_lang")):
        check_text_column(out, side, flag)
    return out


def two_columns(raw, dataset: str, task: str, source_column: str, target_column: str):
    """Two columns of text -> `source` / `target` (+ `id`); a missing column is named with those there are."""
    source_flag, target_flag = (
        ("--source_column", "--target_column") if task == "translation" else ("--text_column", "--summary_column")
    )
    if source_column == target_column:
        raise UserError(
            f"{source_flag} and {target_flag} both name the column {source_column!r}: the model would be "
            f"handed its answer as its input; pass each flag its own column"
        )
    for split_name, split in raw.items():
        for column, flag in ((source_column, source_flag), (target_column, target_flag)):
            if column not in split.column_names:
                raise UserError(
                    f"dataset {dataset!r} ({split_name} split) has no column {column!r} (columns: "
                    f"{', '.join(split.column_names)}): pass {flag} NAME"
                )
    keep = [source_column, target_column] + (["id"] if _has_id(raw, source_column, target_column) else [])
    raw = raw.select_columns(keep).rename_columns({source_column: "source", target_column: "target"})
    check_text_column(raw, "source", f"{source_flag} (now {source_column!r})")
    check_text_column(raw, "target", f"{target_flag} (now {target_column!r})")
    if "id" in keep:
        raw = raw.cast_column("id", _string_feature())
    return raw


def _has_id(raw, *taken) -> bool:
    return "id" not in taken and all("id" in split.column_names for split in raw.values())


def _string_feature():
    from datasets import Value

    return Value("string")


def drop_empty_targets(raw, dataset: str):
    """Rows whose target is missing or blank teach the model to write nothing: dropped and counted, or refused
    when every row of a split is like that. Returns (DatasetDict, notes)."""
    notes = []
    kept = {}
    for name, split in raw.items():
        empty = [i for i, text in enumerate(column(split, "target")) if text is None or not str(text).strip()]
        if empty and len(empty) == len(split):
            raise UserError(
                f"all {len(split)} target texts of the {name} split of dataset {dataset!r} are empty: check the "
                f"target column (--target_column / --summary_column / --target_lang)"
            )
        if empty:
            drop = set(empty)
            kept[name] = split.select([i for i in range(len(split)) if i not in drop])
            notes.append(
                f"dropped {len(empty)} of {len(split)} {name} rows with an empty target text (first: row "
                f"{empty[0] + 1})"
            )
        else:
            kept[name] = split
    from datasets import DatasetDict

    return DatasetDict(kept), notes
