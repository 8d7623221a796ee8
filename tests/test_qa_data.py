"""Question answering data (finetune/data/qa.py): every shape on files written here, answers checked against their
contexts, SQuAD 2.0 detected from the data, every bad input in one line, and the packaged aclsum-qa corpus."""

import json

import pytest

from finetune.core.errors import UserError
from finetune.data.qa import PASSAGE_WORDS, features, load_qa

NAMES = ["Ada", "Bruno", "Chen", "Dara", "Emil", "Fatima", "Goran", "Hana", "Ines", "Jonas", "Kofi", "Lena"]
CITIES = ["Lyon", "Porto", "Kyoto", "Quito", "Oslo", "Accra", "Perth", "Graz", "Cork", "Turin", "Split", "Bern"]


def paragraphs(count=12, offset=0):
    """SQuAD-shaped paragraphs: each context names a person and a city; two questions with answers at their true
    offsets, and (for v2) one question the context cannot answer."""
    out = []
    for i in range(offset, offset + count):
        name, city = NAMES[i % len(NAMES)], CITIES[i % len(CITIES)]
        context = f"Paragraph {i}: {name} was born in {city}. Later {name} moved to the coast and built boats."
        out.append(
            {
                "context": context,
                "qas": [
                    {
                        "id": f"p{i}-where",
                        "question": f"Where was {name} born?",
                        "answers": [{"text": city, "answer_start": context.index(city)}],
                    },
                    {
                        "id": f"p{i}-what",
                        "question": f"What did {name} build?",
                        "answers": [
                            {"text": "boats", "answer_start": context.index("boats")},
                            {"text": "built boats", "answer_start": context.index("built boats")},
                        ],
                    },
                ],
            }
        )
    return out


def nested(version_2=False, count=12, offset=0):
    data = paragraphs(count, offset)
    if version_2:
        for paragraph in data:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                qa["is_impossible"] = False
            paragraph["qas"].append(
                {
                    "id": f"{paragraph['qas'][0]['id']}-impossible",
                    "question": "Which river flows through the city?",
                    "answers": [],
                    "plausible_answers": [{"text": "the coast", "answer_start": context.index("the coast")}],
                    "is_impossible": True,
                }
            )
    return {"version": "v2.0" if version_2 else "1.1", "data": [{"title": "People", "paragraphs": data}]}


def flat_rows(count=12, offset=0):
    """The nested paragraphs as one row per question (the Hub's squad columns)."""
    return [
        {"id": qa["id"], "question": qa["question"], "context": p["context"], "answers": answers_of(qa)}
        for p in paragraphs(count, offset)
        for qa in p["qas"]
    ]


def answers_of(qa):
    return {"text": [a["text"] for a in qa["answers"]], "answer_start": [a["answer_start"] for a in qa["answers"]]}


def write_json(path, document):
    path.write_text(json.dumps(document))
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def check_every_answer_at_its_offset(splits):
    for split in splits.values():
        for row in split:
            for text, start in zip(row["answers"]["text"], row["answers"]["answer_start"]):
                assert row["context"][start : start + len(text)] == text


def one_line_error(dataset, match, **kwargs):
    with pytest.raises(UserError, match=match) as err:
        load_qa(str(dataset), seed=0, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


# ---- the shapes --------------------------------------------------------------------------------------------------


def test_nested_squad_v1_file_is_read_and_split_by_whole_contexts(tmp_path):
    data = load_qa(str(write_json(tmp_path / "train-v1.1.json", nested())), seed=3)
    assert data.version_2 is False
    assert data.provenance.kind == "local" and "nested SQuAD JSON" in data.provenance.note
    assert sum(len(s) for s in data.splits.values()) == 24
    assert set(data.splits["train"].column_names) == {"id", "question", "context", "answers"}
    contexts = {name: set(split["context"]) for name, split in data.splits.items()}
    assert not contexts["train"] & contexts["validation"] and not contexts["train"] & contexts["test"]
    assert any("validation split carved from train" in note for note in data.notes)
    assert any("SQuAD 1.1 style" in note for note in data.notes)
    assert data.splits["train"].features == features()
    check_every_answer_at_its_offset(data.splits)
    everything = [row for split in data.splits.values() for row in split]
    what = next(row for row in everything if row["id"] == "p0-what")
    assert what["answers"]["text"] == ["boats", "built boats"]  # every gold answer kept, for the metric's max


def test_nested_squad_v2_is_detected_and_plausible_answers_are_not_answers(tmp_path):
    data = load_qa(str(write_json(tmp_path / "dev-v2.0.json", nested(version_2=True))), seed=0)
    assert data.version_2 is True
    note = next(note for note in data.notes if "SQuAD 2.0 style" in note)
    assert f"train {len(data.splits['train']) // 3} of {len(data.splits['train'])}" in note  # 1 in 3 per context
    rows = [row for split in data.splits.values() for row in split]
    impossible = [row for row in rows if row["id"].endswith("-impossible")]
    assert len(impossible) == 12 and all(row["answers"] == {"text": [], "answer_start": []} for row in impossible)


def test_folder_of_squad_files_keeps_dev_whole_as_test(tmp_path):
    write_json(tmp_path / "train-v1.1.json", nested(count=12))
    write_json(tmp_path / "dev-v1.1.json", nested(count=4, offset=20))
    data = load_qa(str(tmp_path), seed=0)
    assert sorted(data.splits["test"]["id"]) == sorted(row["id"] for row in flat_rows(4, offset=20))
    assert len(data.splits["train"]) + len(data.splits["validation"]) == 24
    assert any("is the test split" in note for note in data.notes)
    (tmp_path / "dev-v1.1.json").rename(tmp_path / "val.json")  # other names of a validation split
    write_json(tmp_path / "test.json", nested(count=2, offset=30))
    data = load_qa(str(tmp_path), seed=0)
    assert [len(data.splits[s]) for s in ("train", "validation", "test")] == [24, 8, 4]


def test_flat_jsonl_with_other_column_names_and_no_ids(tmp_path):
    rows = [{"q": r["question"], "passage": r["context"], "gold": r["answers"], "extra": 1} for r in flat_rows() * 1]
    path = write_jsonl(tmp_path / "qa.jsonl", rows)
    data = load_qa(
        str(path), seed=0, question_column="q", context_column="passage", answers_column="gold", id_column="qid"
    )
    assert data.version_2 is False
    assert sum(len(s) for s in data.splits.values()) == 24
    assert all(row["id"].startswith("train-") for split in data.splits.values() for row in split)
    assert any("numbered per split" in note for note in data.notes)
    check_every_answer_at_its_offset(data.splits)


def test_parquet_with_splits_and_flat_answer_columns(tmp_path):
    import pandas as pd

    for split, offset in (("train", 0), ("validation", 12), ("test", 14)):
        rows = flat_rows(12 if split == "train" else 2, offset)
        frame = pd.DataFrame(
            {
                "id": [r["id"] for r in rows],
                "question": [r["question"] for r in rows],
                "context": [r["context"] for r in rows],
                "answer_text": [r["answers"]["text"][0] for r in rows],
                "answer_start": [r["answers"]["answer_start"][0] for r in rows],
            }
        )
        frame.to_parquet(tmp_path / f"{split}.parquet")
    data = load_qa(str(tmp_path), seed=0)
    assert [len(data.splits[s]) for s in ("train", "validation", "test")] == [24, 4, 4]
    assert any("answer_text + answer_start" in note for note in data.notes)
    assert data.splits["test"][0]["answers"]["text"] == ["Kyoto"]


def test_jsonl_with_answers_as_the_nested_files_write_them(tmp_path):
    """A list of {text, answer_start} (the nested files' way), or one answer with plain values."""
    rows = flat_rows()
    for row in rows[::2]:
        row["answers"] = [{"text": t, "answer_start": s} for t, s in zip(*row["answers"].values())]
    data = load_qa(str(write_jsonl(tmp_path / "qa.jsonl", rows)), seed=0)
    assert sum(len(s) for s in data.splits.values()) == 24
    check_every_answer_at_its_offset(data.splits)


def test_no_answer_rows_in_jsonl_make_it_version_2(tmp_path):
    rows = flat_rows()
    rows[0]["answers"] = {"text": [], "answer_start": []}  # the Hub's squad_v2 way
    rows[1]["answers"] = {"text": [""], "answer_start": [-1]}  # another export's way
    data = load_qa(str(write_jsonl(tmp_path / "qa.jsonl", rows)), seed=0)
    assert data.version_2 is True
    everything = {row["id"]: row for split in data.splits.values() for row in split}
    assert everything[rows[1]["id"]]["answers"] == {"text": [], "answer_start": []}


# ---- answers checked against their contexts ----------------------------------------------------------------------


def test_answer_start_is_repaired_to_the_nearest_occurrence_and_lost_answers_are_dropped(tmp_path):
    rows = flat_rows()
    context = "The boat left Lyon at dawn; in Lyon it rained. Boats left Lyon again at noon."
    answers = {"text": ["Lyon"], "answer_start": [30]}
    rows[0] = {"id": "near", "question": "Where?", "context": context, "answers": answers}
    rows[1]["answers"]["answer_start"][0] += 2  # off by two: repaired back
    rows[2] = {**rows[2], "answers": {"text": ["Atlantis"], "answer_start": [0]}}  # nowhere: the question is dropped
    rows[3]["answers"] = {"text": ["boats", "submarines"], "answer_start": [rows[3]["context"].index("boats"), 0]}
    data = load_qa(str(write_jsonl(tmp_path / "qa.jsonl", rows)), seed=0)
    note = next(note for note in data.notes if "answer_start checked" in note)
    assert "2 repaired" in note and "2 dropped" in note and "1 question(s) left without an answer dropped too" in note
    everything = {row["id"]: row for split in data.splits.values() for row in split}
    assert everything["near"]["answers"]["answer_start"] == [context.index("Lyon", 20)]  # 31, not 14 or 59
    assert rows[2]["id"] not in everything  # dropped, never turned into a "no answer" question
    assert everything[rows[3]["id"]]["answers"]["text"] == ["boats"]
    assert data.version_2 is False
    check_every_answer_at_its_offset(data.splits)


def test_refused_when_most_answers_are_not_in_their_context(tmp_path):
    rows = flat_rows()
    for row in rows[:18]:
        row["answers"] = {"text": ["Atlantis"], "answer_start": [0]}
    message = one_line_error(write_jsonl(tmp_path / "qa.jsonl", rows), "appear nowhere in their context")
    assert "18 of 27 answers" in message and "--answers_column" in message


# ---- bad input, one line each ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda row: row.update(context=""), "row 4 .* has no context"),
        (lambda row: row.pop("question"), "row 4 .* has no question"),
        (lambda row: row["answers"].update(answer_start=[500, 500]), "answer_start 500 is outside its context"),
        (lambda row: row.update(answers="Lyon"), "not \\{text"),
    ],
    ids=["no-context", "no-question", "offset-outside", "answers-not-squad"],
)
def test_bad_records_are_named_in_one_line(tmp_path, change, match):
    rows = flat_rows()
    change(rows[3])
    if "question" not in rows[3]:
        rows[3]["question"] = None
    one_line_error(write_jsonl(tmp_path / "qa.jsonl", rows), match)


def test_missing_columns_are_named_with_the_columns_there_are(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"query": r["question"], **r} for r in flat_rows()])
    message = one_line_error(path, "no column 'passage'", context_column="passage")
    assert "columns: " in message and "context" in message and "--context_column" in message


def test_nested_json_that_is_not_squad_shaped(tmp_path):
    one_line_error(write_json(tmp_path / "a.json", {"data": [{"title": "x", "text": "y"}]}), "data\\[0\\] has no `par")
    bad_paragraph = {"data": [{"paragraphs": [{"context": "c", "questions": []}]}]}
    one_line_error(write_json(tmp_path / "b.json", bad_paragraph), "paragraphs\\[0\\] has no `qas`")
    one_line_error(write_json(tmp_path / "c.json", {"data": {"rows": []}}), "without a `data` list")
    one_line_error(write_json(tmp_path / "d.json", {"version": "1.1", "articles": []}), "not SQuAD-shaped")
    folder = tmp_path / "folder"
    folder.mkdir()
    write_json(folder / "squad.json", nested())
    one_line_error(folder, "names no split: name it train")


def test_duplicate_ids_are_refused(tmp_path):
    rows = flat_rows()
    rows[5]["id"] = rows[4]["id"]
    one_line_error(write_jsonl(tmp_path / "qa.jsonl", rows), "appears twice")


# ---- the packaged offline default --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aclsum_qa():
    return load_qa("aclsum-qa", seed=0)


def test_aclsum_qa_counts_offsets_and_paper_splits(aclsum_qa):
    splits = aclsum_qa.splits
    assert {name: len(split) for name, split in splits.items()} == {"train": 795, "validation": 394, "test": 766}
    papers = {name: {i.split("/")[0] for i in split["id"]} for name, split in splits.items()}
    assert [len(papers[name]) for name in ("train", "validation", "test")] == [100, 50, 100]
    assert not papers["test"] & papers["train"] and not papers["validation"] & papers["train"]
    assert aclsum_qa.version_2 is False
    assert aclsum_qa.provenance.kind == "packaged"
    assert "MIT" in aclsum_qa.provenance.note and "Not SQuAD" in aclsum_qa.provenance.note
    assert "all 2437 answers are where they say" in " ".join(aclsum_qa.notes)
    check_every_answer_at_its_offset(splits)
    assert len(set(splits["train"]["question"])) == 3  # templated: one question per aspect
    assert max(len(c.split()) for c in splits["train"]["context"]) <= PASSAGE_WORDS
