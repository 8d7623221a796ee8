"""Extractive question answering data: a question, a context, and the answer as a span of the context.

    Hub / jsonl / parquet    `question`, `context`, `answers` = {"text": [...], "answer_start": [...]} (SQuAD's
                             shape: rajpurkar/squad, rajpurkar/squad_v2), or flat `answer_text` / `answer_start`
    nested SQuAD JSON        the original files (train-v1.1.json, dev-v2.0.json): data -> paragraphs -> qas, with
                             `is_impossible` in v2 (its `plausible_answers` are not answers and are ignored)
    aclsum-qa (packaged)     the offline default, built from the aclsum package's highlighted sentences

`datasets`' json builder reads a nested SQuAD file as one row (columns `version` and `data`), which is why
run_qa.py fails on the very files SQuAD distributes (transformers #9370, #11869): they are read here instead.

Every source ends as train / validation / test with `id`, `question`, `context`, `answers`. Each answer is
checked against its context (`check_answers`): the context at `answer_start` must be the answer text; an offset
that is off is repaired to the nearest occurrence of the text, an answer found nowhere is dropped, and all of it
is counted in a note. An example with no answers at all is a SQuAD 2.0 "no answer" only when the data says so,
never because its answer was lost: `version_2` is detected from the data.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from finetune.core.errors import UserError
from finetune.data import packaged
from finetune.data.labels import pick_columns
from finetune.data.provenance import Provenance, use_packaged
from finetune.data.sources import load_any, load_hub_dataset

SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
}
CARVED_FRACTION = 0.1  # of train's contexts, for each split a dataset lacks


@dataclass
class QAData:
    """splits: DatasetDict train / validation / test with `id` (str), `question`, `context` and `answers`
    ({"text": list[str], "answer_start": list[int]}, empty lists for a question with no answer in its context).

    version_2: the data has unanswerable questions (SQuAD 2.0 style), detected from the data; it decides the
    metric (squad_v2) and the postprocessing (a null answer may win)."""

    splits: object
    version_2: bool
    provenance: Provenance
    notes: list = field(default_factory=list)


def features():
    """The columns every split ends with (the Hub's squad schema)."""
    from datasets import Features, Sequence, Value

    return Features(
        {
            "id": Value("string"),
            "question": Value("string"),
            "context": Value("string"),
            "answers": {"text": Sequence(Value("string")), "answer_start": Sequence(Value("int32"))},
        }
    )


def as_dataset(rows: list[dict]):
    """Checked rows -> a Dataset of `features()`, through one Arrow table (SQuAD's 88k questions in about a second;
    Dataset.from_list encodes row by row)."""
    from datasets import Dataset
    from datasets.table import InMemoryTable

    schema = features()
    return Dataset(InMemoryTable.from_pylist([{k: row[k] for k in schema} for row in rows], schema=schema.arrow_schema))


# ---- the original nested SQuAD JSON ---------------------------------------------------------------------------


def nested_document(path: Path) -> Optional[dict]:
    """The parsed file when `path` is a .json file holding one JSON object that is not itself one example: the
    shape SQuAD distributes (checked by `squad_columns`); None for JSON Lines, a JSON array, or anything else."""
    if not path.is_file() or path.suffix.lower() != ".json":
        return None
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"{"):
        return None
    try:
        with open(path, encoding="utf-8-sig") as f:
            document = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # JSON Lines (one object per line) or broken: the ordinary readers say which
    return document if isinstance(document, dict) and "question" not in document else None


def squad_columns(path: Path, document: dict) -> dict:
    """A nested SQuAD document -> columns {id, question, context, answers} (one row per question).

    v2's unanswerable questions (`is_impossible: true`) get empty answers; their `plausible_answers` are
    distractors written for the adversarial task and are never used as answers.
    """
    data = document.get("data")
    if not isinstance(data, list):
        raise UserError(
            f"{path} is one JSON object without a `data` list, so it is not SQuAD-shaped: a nested SQuAD file is "
            f'{{"data": [{{"paragraphs": [{{"context": ..., "qas": [...]}}]}}]}}; give that, or JSON Lines'
        )
    columns = {"id": [], "question": [], "context": [], "answers": []}
    for a, article in enumerate(data):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise UserError(
                f"{path}: data[{a}] has no `paragraphs` list, so it is not SQuAD-shaped "
                f"(data -> paragraphs -> qas): fix that entry, or give the examples as JSON Lines"
            )
        for p, paragraph in enumerate(paragraphs):
            where = f"data[{a}].paragraphs[{p}]"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                raise UserError(f"{path}: {where} has no `qas` list: a SQuAD paragraph is {{context, qas}}; fix it")
            context = paragraph.get("context")
            for q, qa in enumerate(paragraph["qas"]):
                if not isinstance(qa, dict):
                    raise UserError(
                        f"{path}: {where}.qas[{q}] is not an object: a SQuAD question is {{id, question, answers}}"
                    )
                impossible = bool(qa.get("is_impossible", False))
                answers = [] if impossible else qa.get("answers", [])
                if not isinstance(answers, list) or not all(
                    isinstance(x, dict) and "text" in x and "answer_start" in x for x in answers
                ):
                    raise UserError(
                        f"{path}: {where}.qas[{q}] (id {qa.get('id')!r}) has answers that are not a list of "
                        f"{{text, answer_start}}: fix that question"
                    )
                columns["id"].append(str(qa.get("id", f"{a}-{p}-{q}")))
                columns["question"].append(qa.get("question"))
                columns["context"].append(context)
                columns["answers"].append(
                    {"text": [x["text"] for x in answers], "answer_start": [x["answer_start"] for x in answers]}
                )
    if not columns["id"]:
        raise UserError(f"{path} holds no questions (no qas in any paragraph): give a SQuAD file with questions")
    return columns


def load_squad_files(files: dict):
    """{split: (path, its nested SQuAD document)} -> DatasetDict of the same splits."""
    from datasets import Dataset, DatasetDict

    return DatasetDict({split: Dataset.from_dict(squad_columns(*found)) for split, found in files.items()})


def squad_files_in(folder: Path) -> dict:
    """The nested SQuAD files of a folder by split, {split: (path, document)}: train*.json, dev* / val*.json,
    test*.json (as SQuAD names them: train-v1.1.json, dev-v2.0.json)."""
    found = {}
    for path in sorted(folder.glob("*.json")):
        document = nested_document(path)
        if document is None:
            continue
        stem = path.stem.lower()
        split = next((SPLIT_ALIASES[k] for k in ("train", "dev", "val", "test") if stem.startswith(k)), None)
        if split is None:
            raise UserError(
                f"{path} is a nested JSON file whose name names no split: name it train*.json, dev*.json or "
                f"test*.json (as SQuAD's train-v1.1.json, dev-v1.1.json), or pass the file itself as --dataset"
            )
        if split in found:
            raise UserError(f"{folder} has two {split} files ({found[split][0].name}, {path.name}): keep one")
        found[split] = (path, document)
    return found


# ---- any source -> raw splits ---------------------------------------------------------------------------------


def load_raw(dataset: str, dataset_config: Optional[str] = None):
    """(DatasetDict as the source has it, its Provenance): packaged, nested SQuAD JSON, or what load_any reads."""
    if use_packaged(dataset, PACKAGED_QA, dataset_config):
        raw, note = PACKAGED_QA[dataset]()
        return raw, Provenance("packaged", note)
    path = Path(os.path.expanduser(dataset))
    document = nested_document(path)
    if document is not None:
        return load_squad_files({"train": (path, document)}), Provenance("local", f"nested SQuAD JSON file {path}")
    if path.is_dir():
        files = squad_files_in(path)
        if files:
            names = ", ".join(f"{split} {found[0].name}" for split, found in files.items())
            return load_squad_files(files), Provenance("local", f"nested SQuAD JSON files in {path} ({names})")
    if dataset_config:
        note = f"Hugging Face Hub dataset {dataset} ({dataset_config})"
        return load_hub_dataset(dataset, dataset_config), Provenance("hub", note)
    return load_any(dataset, {})


def standard_columns(raw, dataset: str, question_column, context_column, answers_column, id_column):
    """Keep id / question / context / answers under those names; (DatasetDict, notes).

    Flat answers (`answer_text` + `answer_start` columns, one answer or a list each) become SQuAD's `answers`;
    a source without ids is numbered per split (ids match predictions to examples, so they must be unique).
    """
    notes = []
    first = next(iter(raw.values()))
    flat = {"answer_text", "answer_start"} <= set(first.column_names)
    if answers_column == "answers" and "answers" not in first.column_names and flat:

        def nest(row):
            text, start = row["answer_text"], row["answer_start"]
            many = isinstance(text, list)
            return {"answers": {"text": text if many else [text], "answer_start": start if many else [start]}}

        raw = raw.map(nest, remove_columns=["answer_text", "answer_start"])
        answers_column = "answers"
        notes.append("answers read from the flat columns answer_text + answer_start")
    columns = {
        "question": (question_column, "--question_column"),
        "context": (context_column, "--context_column"),
        "answers": (answers_column, "--answers_column"),
    }
    if id_column in first.column_names:
        columns["id"] = (id_column, "--id_column")
    raw = pick_columns(raw, dataset, columns)
    if "id" not in raw[next(iter(raw))].column_names:
        raw = {name: split.add_column("id", [f"{name}-{i}" for i in range(len(split))]) for name, split in raw.items()}
        notes.append(f"no {id_column!r} column: examples numbered per split (train-0, train-1, ...)")
    return raw, notes


# ---- answers checked against their contexts -------------------------------------------------------------------


@dataclass
class AnswerCounts:
    answers: int = 0
    repaired: int = 0
    dropped: int = 0
    examples_dropped: int = 0


def nearest_occurrence(context: str, text: str, start: int) -> int:
    """The offset of the occurrence of `text` in `context` nearest to `start`; -1 if there is none."""
    best, position = -1, context.find(text)
    while position != -1:
        if best == -1 or abs(position - start) < abs(best - start):
            best = position
        position = context.find(text, position + 1)
    return best


def as_lists(answers) -> Optional[tuple[list, list]]:
    """(texts, starts) from SQuAD's {text: [...], answer_start: [...]}, from one {text, answer_start} with plain
    values, or from a list of {text, answer_start} (the nested files' way, kept by JSON Lines written from them);
    None for anything else."""
    if isinstance(answers, list) and all(isinstance(a, dict) and {"text", "answer_start"} <= set(a) for a in answers):
        return [a["text"] for a in answers], [a["answer_start"] for a in answers]
    if not isinstance(answers, dict) or not {"text", "answer_start"} <= set(answers):
        return None
    texts, starts = answers["text"], answers["answer_start"]
    if isinstance(texts, str) or not isinstance(texts, list):
        return ([] if texts is None else [texts]), ([] if starts is None else [starts])
    return list(texts), list(starts or [])


def check_example(row: dict, where: str, counts: AnswerCounts):
    """The example with each answer at an offset where the context holds its text; None if all were lost."""
    for column in ("question", "context"):
        value = row[column]
        if not isinstance(value, str) or not value.strip():
            raise UserError(
                f"{where} (id {row['id']!r}) has no {column}: every example needs a question and a context; "
                f"fill it in or remove the record"
            )
    context, answers = row["context"], as_lists(row["answers"])
    if answers is None:
        raise UserError(
            f"{where} (id {row['id']!r}) has answers {str(row['answers'])[:60]!r}, not {{text: [...], answer_start: "
            f"[...]}}: write them in SQuAD's shape (or as answer_text / answer_start columns)"
        )
    texts, starts = answers
    if len(texts) != len(starts):
        raise UserError(
            f"{where} (id {row['id']!r}) has {len(texts)} answer texts but {len(starts)} answer_start values: "
            f"give one offset per answer"
        )
    # An empty text is how some exports write "no answer" (text "", answer_start -1): not an answer to check.
    real = [(text, start) for text, start in zip(texts, starts) if text != ""]
    kept_texts, kept_starts = [], []
    for text, start in real:
        counts.answers += 1
        if not isinstance(text, str) or isinstance(start, bool) or not isinstance(start, int):
            raise UserError(
                f"{where} (id {row['id']!r}) has the answer {text!r} at {start!r}: an answer is a text and the "
                f"integer character offset where it starts in the context; fix that record"
            )
        if not 0 <= start < len(context):
            raise UserError(
                f"{where} (id {row['id']!r}): answer_start {start} is outside its context ({len(context)} "
                f"characters): answer_start is the character offset of the answer in the context; fix it"
            )
        if context[start : start + len(text)] != text:
            found = nearest_occurrence(context, text, start)
            if found == -1:
                counts.dropped += 1
                continue
            counts.repaired += 1
            start = found
        kept_texts.append(text)
        kept_starts.append(start)
    if real and not kept_texts:
        counts.examples_dropped += 1  # its answers were lost, which does not make it unanswerable
        return None
    return {**row, "answers": {"text": kept_texts, "answer_start": kept_starts}}


def check_answers(raw) -> tuple[dict, AnswerCounts, bool]:
    """({split: list of checked rows}, the counts, whether any example has no answer: SQuAD 2.0 style)."""
    counts, splits, version_2 = AnswerCounts(), {}, False
    for name, split in raw.items():
        rows, seen = [], set()
        for i, row in enumerate(split.to_list()):  # one conversion, not a dict per row through __getitem__
            where = f"{name} row {i + 1}"
            if row["id"] in seen:
                raise UserError(
                    f"{where}: the id {row['id']!r} appears twice in the {name} split: predictions are matched "
                    f"to examples by id, so ids must be unique; fix the ids or pass --id_column with unique ones"
                )
            seen.add(row["id"])
            checked = check_example({**row, "id": str(row["id"])}, where, counts)
            if checked is not None:
                version_2 |= not checked["answers"]["text"]  # no answer in the data, not one lost on the way
                rows.append(checked)
        splits[name] = rows
    if counts.answers and counts.dropped * 2 > counts.answers:
        raise UserError(
            f"{counts.dropped} of {counts.answers} answers appear nowhere in their context: the answer and context "
            f"columns do not belong together; check --answers_column / --context_column"
        )
    return splits, counts, version_2


# ---- splits ---------------------------------------------------------------------------------------------------


def carve(rows: list, fraction: float, seed: int) -> tuple[list, list]:
    """(rest, carved): about `fraction` of the rows, whole contexts at a time, so that no paragraph has questions
    on both sides (a model that read a context in training would answer its held-out questions from memory)."""
    contexts = sorted({row["context"] for row in rows})
    random.Random(seed).shuffle(contexts)
    held = set(contexts[: max(1, round(fraction * len(contexts)))])
    return [r for r in rows if r["context"] not in held], [r for r in rows if r["context"] in held]


def three_splits(rows: dict, seed: int) -> tuple[dict, list]:
    """train / validation / test from the splits a source has; (splits, notes)."""
    splits, notes = {}, []
    for name, split_rows in rows.items():
        canonical = SPLIT_ALIASES.get(name)
        if canonical is None:
            notes.append(f"ignored split {name!r}")
        elif canonical in splits:
            raise UserError(f"the dataset has two {canonical} splits (one is {name!r}): keep one")
        else:
            splits[canonical] = split_rows
    if not splits.get("train"):
        raise UserError(
            f"the dataset has no train split with examples (found: {', '.join(rows) or 'none'}): provide one"
        )
    if "test" not in splits and "validation" in splits:
        # SQuAD publishes no test set: its dev set stays whole as our test split, so test numbers compare with
        # the published dev-set numbers, and the validation split that picks the best weights comes from train.
        splits["test"] = splits.pop("validation")
        notes.append(
            f"no test split: the validation split ({len(splits['test'])} questions) is the test split, kept whole "
            f"(SQuAD's dev set is its only public evaluation set: test numbers then compare with published ones)"
        )
    for name in ("validation", "test"):
        if name not in splits:
            train, carved = carve(splits["train"], CARVED_FRACTION, seed)
            if not train or not carved:
                raise UserError(
                    f"the train split has too few distinct contexts ({len({r['context'] for r in splits['train']})}) "
                    f"to carve a {name} split from: add examples, or give the dataset its own {name} split"
                )
            splits["train"], splits[name] = train, carved
            notes.append(
                f"{name} split carved from train: {len(carved)} questions on "
                f"{len({r['context'] for r in carved})} contexts (whole contexts, seed {seed})"
            )
    for name in ("validation", "test"):
        if not splits[name]:
            raise UserError(f"the {name} split has no examples left after checking answers: give it examples")
    return {name: splits[name] for name in ("train", "validation", "test")}, notes


# ---- the one entry point --------------------------------------------------------------------------------------


def load_qa(
    dataset: str,
    *,
    seed: int,
    dataset_config: Optional[str] = None,
    question_column: str = "question",
    context_column: str = "context",
    answers_column: str = "answers",
    id_column: str = "id",
) -> QAData:
    """Any source -> train / validation / test of checked question / context / answers, with notes saying what
    was detected, carved, repaired and dropped."""
    from datasets import DatasetDict

    raw, provenance = load_raw(dataset, dataset_config)
    raw, notes = standard_columns(raw, dataset, question_column, context_column, answers_column, id_column)
    rows, counts, version_2 = check_answers(raw)
    splits, split_notes = three_splits(rows, seed)
    notes += split_notes
    if counts.repaired or counts.dropped:
        notes.append(
            f"answer_start checked against the context for {counts.answers} answers: {counts.repaired} repaired "
            f"(moved to the nearest occurrence of the answer text), {counts.dropped} dropped (the text appears "
            f"nowhere in its context)"
            + (
                f"; {counts.examples_dropped} question(s) left without an answer dropped too"
                if counts.examples_dropped
                else ""
            )
        )
    else:
        notes.append(f"answer_start checked against the context: all {counts.answers} answers are where they say")
    unanswerable = {name: sum(not row["answers"]["text"] for row in split) for name, split in splits.items()}
    notes.append(
        "SQuAD 2.0 style, detected from the data: some questions have no answer in their context (empty answers; "
        + ", ".join(f"{name} {n} of {len(splits[name])}" for name, n in unanswerable.items())
        + "): scored with squad_v2, and a null answer may win"
        if version_2
        else "SQuAD 1.1 style, detected from the data: every question has an answer in its context"
    )
    splits = DatasetDict({name: as_dataset(split_rows) for name, split_rows in splits.items()})
    return QAData(splits=splits, version_2=version_2, provenance=provenance, notes=notes)


# ---- the offline default ---------------------------------------------------------------------------------------


# ACLSum's annotators highlighted, in each paper's abstract, introduction and conclusion, the sentences that state
# its challenge, its approach and its outcome. One question per aspect, asked of a passage that holds such a
# sentence, is an honest extractive task: the answer is a span of the passage, located by construction.
ACLSUM_QUESTIONS = {
    "challenge": "What challenge does this paper address?",
    "approach": "What approach does the paper take?",
    "outcome": "What is the outcome of the paper?",
}
ACLSUM_SECTIONS = ("abstract", "introduction", "conclusion")
ACLSUM_SPLITS = {"train": "train", "val": "validation", "test": "test"}
# A passage is consecutive sentences of one section, cut at sentence boundaries: introductions run to 2,300 words,
# and passages of at most 400 words (up to about 570 MiniLM word pieces) put a third of the questions over one
# 384-token window, so the windows and the answers that straddle them are exercised on real text.
PASSAGE_WORDS = 400


def passages(sentences: list[str], limit: int = PASSAGE_WORDS) -> list[tuple[int, int]]:
    """[(first, end)) sentence ranges of at most `limit` words each (a longer sentence is a passage of its own)."""
    ranges, first, words = [], 0, 0
    for i, sentence in enumerate(sentences):
        n = len(sentence.split())
        if i > first and words + n > limit:
            ranges.append((first, i))
            first, words = i, 0
        words += n
    if sentences:
        ranges.append((first, len(sentences)))
    return ranges


def runs(flags: list[int]) -> list[tuple[int, int]]:
    """[(first, end)) of each run of consecutive 1s."""
    found, first = [], None
    for i, flag in enumerate(list(flags) + [0]):
        if flag and first is None:
            first = i
        elif not flag and first is not None:
            found.append((first, i))
            first = None
    return found


def aclsum_questions(paper: dict) -> list[dict]:
    """The questions of one ACLSum paper: for each passage and each aspect with a highlighted sentence in it, the
    aspect's question; its answers are the runs of highlighted sentences, at their offsets in the passage."""
    rows = []
    for section in ACLSUM_SECTIONS:
        sentences = paper["sentences"][section]
        for number, (first, end) in enumerate(passages(sentences)):
            context = " ".join(sentences[first:end])
            starts = [0]
            for sentence in sentences[first:end]:
                starts.append(starts[-1] + len(sentence) + 1)
            for aspect, question in ACLSUM_QUESTIONS.items():
                spans = runs(paper["highlights"][aspect][section][first:end])
                if spans:
                    rows.append(
                        {
                            "id": f"{paper['id']}/{section}/{number}/{aspect}",
                            "question": question,
                            "context": context,
                            "answers": {
                                "text": [" ".join(sentences[first + a : first + b]) for a, b in spans],
                                "answer_start": [starts[a] for a, _ in spans],
                            },
                        }
                    )
    return rows


def packaged_aclsum_qa():
    """The offline default: extractive questions built from the aclsum package's highlights (see ACLSUM_QUESTIONS).

    The paper splits are the package's (100 / 50 / 100 papers), so no test paper is seen in training. The text is
    the package's tokenized sentences (spaces around punctuation), not detokenized: nothing is rewritten. The
    S2ORC full texts in paper_jsons/ are not used: the highlights index the tokenized sentences, not them.
    """
    from datasets import DatasetDict

    folder = packaged.aclsum_folder()
    splits, papers = {}, {}
    for file, name in ACLSUM_SPLITS.items():
        with open(folder / f"{file}.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        papers[name] = len(rows)
        splits[name] = as_dataset([q for paper in rows for q in aclsum_questions(paper)])
    counts = " / ".join(f"{len(splits[name])}" for name in ACLSUM_SPLITS.values())
    paper_counts = " / ".join(f"{papers[name]}" for name in ACLSUM_SPLITS.values())
    note = (
        f"packaged aclsum-qa, built from the aclsum 0.1.2 package (PyPI, MIT; ACLSum, Takeshita et al. 2024; the "
        f"papers are ACL Anthology text, CC BY 4.0 since 2016, CC BY-NC-SA 3.0 before, as the Anthology states): "
        f"{counts} questions (train / validation / test) on {paper_counts} papers; each asks one of three fixed "
        f"questions (the paper's challenge, approach or outcome) of a passage of at most {PASSAGE_WORDS} words of "
        f"its abstract, introduction or conclusion, and its answers are the sentences human annotators highlighted "
        f"for that aspect. Not SQuAD: the questions are templates, the answers whole sentences, the text tokenized "
        f"as the package ships it; the offline default standing in for rajpurkar/squad"
    )
    return DatasetDict(splits), note


PACKAGED_QA = {packaged.ACLSUM_QA: packaged_aclsum_qa}
