"""Files as people download them: what the name does not say (encoding, delimiter, format) is found from the
content, read correctly, and said in the run's notes; what cannot be read is one line naming the file.

Each case writes the bytes a real tool writes (Excel's latin-1 / cp1252 CSV, a TSV saved as .csv, the CoNLL
shared tasks' `eng.train`), loads it through the same function the recipes call, and checks the examples
themselves, not only that no error was raised.
"""

import csv
import json

import pytest

from finetune.core.errors import UserError
from finetune.data.lm import load_corpus
from finetune.data.sources import detect_encoding
from finetune.data.text import load_text_classification
from finetune.data.tokens import load_token_classification

ROWS = [
    (f"review {i} of the café, naïve and {'great' if i % 2 else 'awful'}", "positive" if i % 2 else "negative")
    for i in range(40)
]


def write_rows(path, encoding="utf-8", delimiter=",", header=("text", "label")):
    with open(path, "w", encoding=encoding, newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(ROWS)
    return path


def all_texts(data):
    return {text for split in data.splits.values() for text in split["text"]}


@pytest.mark.parametrize(
    "encoding, named", [("latin-1", "cp1252"), ("cp1252", "cp1252"), ("utf-8-sig", "byte order mark")]
)
def test_a_csv_not_in_plain_utf8_is_read_and_the_encoding_named(tmp_path, encoding, named):
    data = load_text_classification(str(write_rows(tmp_path / "reviews.csv", encoding)), seed=0)
    assert all_texts(data) == {text for text, _ in ROWS}  # "café" as written, not mojibake; the BOM not in a name
    assert named in data.provenance.note and "reviews.csv" in data.provenance.note


def test_latin1_bytes_that_cp1252_leaves_undefined_fall_back_to_latin1(tmp_path):
    path = tmp_path / "odd.csv"
    path.write_bytes(b"text,label\ncaf\xe9 \x81,positive\n")  # 0x81 has no cp1252 character
    assert detect_encoding(path) == ("latin-1", ["read as latin-1, not UTF-8 (some of its bytes are not valid UTF-8)"])
    assert detect_encoding(write_rows(tmp_path / "plain.csv")) == ("utf-8", [])


def test_a_tab_separated_file_named_csv_is_read_by_its_tabs(tmp_path):
    data = load_text_classification(str(write_rows(tmp_path / "reviews.csv", delimiter="\t")), seed=0)
    assert all_texts(data) == {text for text, _ in ROWS} and data.label_names == ["negative", "positive"]
    assert "tab-separated" in data.provenance.note


def test_a_comma_csv_with_tabs_in_its_texts_stays_comma_separated(tmp_path):
    path = tmp_path / "tabs_inside.csv"
    path.write_text("text,label\n" + "".join(f'"a\\tb {i}\tc",{"pos" if i % 2 else "neg"}\n' for i in range(40)))
    data = load_text_classification(str(path), seed=0)
    assert data.label_names == ["neg", "pos"] and "separated" not in data.provenance.note


@pytest.mark.parametrize(
    "name, write, seen",
    [
        (
            "data",
            lambda p: p.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in ROWS)),
            "JSON Lines",
        ),
        ("train.txt", lambda p: write_rows(p), "csv file (comma-separated"),
        ("reviews.dat", lambda p: write_rows(p, delimiter="\t"), "csv file (tab-separated"),
    ],
)
def test_a_file_whose_name_does_not_say_its_format_is_sniffed(tmp_path, name, write, seen):
    write(tmp_path / name)
    data = load_text_classification(str(tmp_path / name), seed=0)
    assert all_texts(data) == {text for text, _ in ROWS}
    assert seen in data.provenance.note and "detected from its content" in data.provenance.note


def test_a_plain_text_file_stays_one_example_per_line(tmp_path):
    path = tmp_path / "corpus.txt"
    lines = [f"line {i}, with a comma and words enough to count" for i in range(40)]
    path.write_text("\n".join(lines) + "\n")
    data = load_corpus(str(path), seed=0)
    assert {text for split in data.splits.values() for text in split["text"]} == set(lines)
    assert "detected" not in data.provenance.note


CONLL = "-DOCSTART- -X- -X- O\n\n" + "".join(
    f"Señor NNP B-NP B-PER\nGarcía{i} NNP I-NP I-PER\nvisita VBZ B-VP O\nMadrid NNP B-NP B-LOC\n. . O O\n\n"
    for i in range(30)
)


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])  # CoNLL-2002's esp.train is latin-1
def test_shared_task_conll_files_are_read_as_distributed(tmp_path, encoding):
    path = tmp_path / "esp.train"
    path.write_text(CONLL, encoding=encoding)
    data = load_token_classification(str(path), seed=0)
    words = {w for split in data.splits.values() for sentence in split["tokens"] for w in sentence}
    assert "Señor" in words and any(word.startswith("García") for word in words)
    assert set(data.label_names) == {"O", "B-PER", "I-PER", "B-LOC"}
    note = data.provenance.note
    assert "read as CoNLL" in note and ((encoding == "latin-1") == ("not UTF-8" in note))


def test_conll_data_given_to_a_text_classifier_names_the_task_that_reads_it(tmp_path):
    path = tmp_path / "eng.train"
    path.write_text(CONLL)
    with pytest.raises(UserError, match="CoNLL token data.*finetune train token_classification"):
        load_text_classification(str(path))


def test_a_null_label_is_named_by_its_row_in_the_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    labels = [label for _, label in ROWS]
    labels[27] = None
    pq.write_table(pa.table({"text": [text for text, _ in ROWS], "label": labels}), tmp_path / "d.parquet")
    for seed in (0, 1, 2):  # whatever the shuffle, the same row: the file's own
        with pytest.raises(UserError, match=r"^row 28 of the train split has no label \(row 28 of the file"):
            load_text_classification(str(tmp_path / "d.parquet"), seed=seed)


@pytest.mark.parametrize("flags", [{"text_column": "label"}, {"label_column": "text"}, {"text_pair_column": "text"}])
def test_one_column_for_input_and_label_is_refused(tmp_path, flags):
    with pytest.raises(UserError, match="both name the column"):
        load_text_classification(str(write_rows(tmp_path / "d.csv")), **flags)
    with pytest.raises(UserError, match="both name the column"):
        load_corpus(str(tmp_path / "d.csv"), text_column="label", condition_on_label=True)


def test_a_binary_file_is_not_text(tmp_path):
    (tmp_path / "data").write_bytes(b"\x00\x01PK" * 100)
    with pytest.raises(UserError, match="not a text file"):
        load_text_classification(str(tmp_path / "data"))
