"""The general text-classification recipe: sentence pairs, regression, multi-label (both label layouts), class
weights, GLUE through the loopback Hub, local GLUE TSV and save_to_disk folders, and its bad inputs.

Each problem type trains once (module-scoped, tiny BERT and a tiny scratch model, a few seconds each); every
metric in results.json is recomputed with scikit-learn / scipy from the saved test predictions.
"""

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
)
from sklearn.utils.class_weight import compute_class_weight

from recipes.text_classification import TextClassificationConfig, build_data, main

WORDS = {
    "pos": "good great happy fine lovely".split(),
    "neg": "bad awful sad poor ugly".split(),
    "sports": "goal match team score coach".split(),
    "politics": "vote law party senate mayor".split(),
    "other": "the a of and to in it is".split(),
}


def sentence(rng, kind, n=5):
    return " ".join(rng.choice(WORDS[kind] + WORDS["other"]) for _ in range(n))


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Small files: a skewed sentence-pair task, a pair-scored regression, multi-label in both layouts."""
    folder = tmp_path_factory.mktemp("textcls")
    rng = random.Random(0)
    pairs, scores, tags, columns = [], [], [], []
    for i in range(120):
        same = rng.random() < 0.25  # skewed: a quarter are paraphrases (class weights matter)
        a = sentence(rng, "pos") + f" {i}"
        b = sentence(rng, "pos" if same else "neg")
        pairs.append((a, b, "paraphrase" if same else "different"))
        score = rng.randint(0, 5)
        scores.append((a, sentence(rng, "pos", n=score + 1), float(score) + 0.5 * rng.random()))
        sport, politics = rng.random() < 0.5, rng.random() < 0.3
        text = (
            " ".join(
                filter(
                    None,
                    [
                        sentence(rng, "sports") if sport else "",
                        sentence(rng, "politics") if politics else "",
                        sentence(rng, "other"),
                    ],
                )
            )
            + f" {i}"
        )
        tags.append({"text": text, "tags": ";".join(n for n, on in (("sports", sport), ("politics", politics)) if on)})
        columns.append((text, int(sport), int(politics)))
    write_csv(folder / "pairs.csv", ["first", "second", "relation"], pairs)
    write_csv(folder / "scores.csv", ["a", "b", "similarity"], scores)
    (folder / "tags.jsonl").write_text("".join(json.dumps(row) + "\n" for row in tags))
    write_csv(folder / "columns.csv", ["text", "sports", "politics"], columns)
    return folder


def tiny(tmp, model, dataset, **overrides):
    flags = dict(
        output_dir=tmp / "run",
        model=model,
        dataset=dataset,
        max_length=24,
        batch_size=16,
        eval_batch_size=32,
        num_epochs=2,
        learning_rate=2e-3,
        scratch_learning_rate=2e-3,
        scratch_layers=1,
        scratch_d_model=32,
        log_steps=2,
        warmup_ratio=0.0,
    )
    flags.update(overrides)
    argv = []
    for key, value in flags.items():
        argv += [f"--{key}", str(value)]
    assert main(argv) == 0
    run_dir = Path(flags["output_dir"])
    return run_dir, json.loads((run_dir / "results.json").read_text())


RUNS = {
    "pairs, class weights": dict(
        dataset="pairs.csv",
        text_column="first",
        text_pair_column="second",
        label_column="relation",
        class_weights="balanced",
        metric_for_best="f1",
    ),
    "regression": dict(dataset="scores.csv", text_column="a", text_pair_column="b", label_column="similarity"),
    "multi-label, delimited": dict(dataset="tags.jsonl", label_column="tags", label_delimiter=";"),
    "multi-label, 0/1 columns, class weights": dict(
        dataset="columns.csv", label_column="sports,politics", class_weights="balanced"
    ),
}


@pytest.fixture(scope="module", params=list(RUNS))
def finished(request, data_dir, tiny_bert_dir, tmp_path_factory):
    flags = dict(RUNS[request.param])
    flags["dataset"] = str(data_dir / flags["dataset"])
    run_dir, results = tiny(tmp_path_factory.mktemp("run"), str(tiny_bert_dir), **flags)
    return request.param, flags, run_dir, results


def predictions(run_dir, role):
    return json.loads((run_dir / f"predictions_{role}.json").read_text())


@pytest.mark.slow
def test_every_problem_type_trains_and_reports_metrics_sklearn_agrees_with(finished):
    name, flags, run_dir, results = finished
    expected_type = {"pairs": "single_label", "regression": "regression"}.get(name.split(",")[0], "multi_label")
    assert results["problem_type"] == expected_type
    assert [m["role"] for m in results["models"]] == ["pretrained", "scratch"]  # the scratch model does every type
    for model in results["models"]:
        saved = predictions(run_dir, model["role"])
        refs, preds, test = np.asarray(saved["references"]), np.asarray(saved["predictions"]), model["test"]
        assert len(refs) == len(preds) > 0
        if expected_type == "regression":
            assert test["pearson"] == pytest.approx(stats.pearsonr(preds, refs).statistic, abs=1e-4)
            assert test["spearman"] == pytest.approx(stats.spearmanr(preds, refs).statistic, abs=1e-4)
            assert test["mse"] == pytest.approx(mean_squared_error(refs, preds), abs=1e-4)
            assert test["mae"] == pytest.approx(mean_absolute_error(refs, preds), abs=1e-4)
            assert "per_class" not in model and "ece" not in model
            continue
        probabilities = np.asarray(saved["probabilities"])
        if expected_type == "single_label":
            assert (preds == probabilities.argmax(axis=1)).all()
            assert test["accuracy"] == pytest.approx(accuracy_score(refs, preds), abs=1e-4)
            assert test["f1"] == pytest.approx(f1_score(refs, preds), abs=1e-4)
            confidences, correct = probabilities.max(axis=1), preds == refs
            confusion = json.loads((run_dir / f"confusion_matrix_{model['role']}.json").read_text())
            from sklearn.metrics import confusion_matrix

            assert confusion["counts"] == confusion_matrix(refs, preds, labels=range(len(results["labels"]))).tolist()
            assert (run_dir / f"confusion_matrix_{model['role']}.png").stat().st_size > 5000
        else:
            assert (preds == (probabilities > 0.5)).all()
            assert test["f1_micro"] == pytest.approx(f1_score(refs, preds, average="micro", zero_division=0), abs=1e-4)
            assert test["f1_macro"] == pytest.approx(f1_score(refs, preds, average="macro", zero_division=0), abs=1e-4)
            assert test["subset_accuracy"] == pytest.approx(accuracy_score(refs, preds), abs=1e-4)
            confidences = np.maximum(probabilities, 1 - probabilities).ravel()
            correct = ((probabilities > 0.5) == refs.astype(bool)).ravel()
        # per-class table against sklearn; ECE against an independent 15-bin computation (np.digitize)
        labels = range(len(results["labels"]))
        precision, recall, f1, support = precision_recall_fscore_support(
            refs, preds, labels=labels if refs.ndim == 1 else None, zero_division=0
        )
        table = model["per_class"]
        assert [row["label"] for row in table] == results["labels"]
        assert [row["support"] for row in table] == support.tolist()
        for row, p, r, f in zip(table, precision, recall, f1):
            assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((p, r, f), abs=1e-4)
        bins = np.clip(np.digitize(confidences, np.linspace(0, 1, 16)[1:-1]), 0, 14)
        ece = sum(
            abs(correct[bins == b].mean() - confidences[bins == b].mean()) * (bins == b).mean()
            for b in range(15)
            if (bins == b).any()
        )
        assert model["ece"] == pytest.approx(ece, abs=1e-4)
        reliability = json.loads((run_dir / f"reliability_{model['role']}.json").read_text())
        assert reliability["bins"] == 15 and sum(r["count"] for r in reliability["rows"]) == len(confidences)
        assert (run_dir / f"reliability_{model['role']}.png").stat().st_size > 5000

    if flags.get("class_weights") == "balanced":  # the weights the loss used, against scikit-learn's definition
        config = TextClassificationConfig(**{k: v for k, v in flags.items() if k != "class_weights"})
        train = np.asarray(build_data(config).splits["train"]["label"])
        if expected_type == "single_label":
            expected = compute_class_weight("balanced", classes=np.arange(len(results["labels"])), y=train)
        else:
            expected = (len(train) - train.sum(axis=0)) / train.sum(axis=0)
        assert results["class_weights"] == pytest.approx(expected.tolist(), abs=1e-4)
    # the run directory is a model directory: reloads with the problem type its loss needs
    from transformers import AutoConfig

    import finetune.models.scratch  # noqa: F401

    hf_type = {
        "single_label": "single_label_classification",
        "multi_label": "multi_label_classification",
        "regression": "regression",
    }[expected_type]
    assert AutoConfig.from_pretrained(run_dir).problem_type == hf_type
    assert AutoConfig.from_pretrained(run_dir / "scratch").problem_type == hf_type


def test_weighted_loss_hook_equals_torch_weighted_losses(tiny_bert_dir):
    """The hook's loss against PyTorch's own weighted CrossEntropyLoss / BCEWithLogitsLoss(pos_weight)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from finetune.models.losses import balanced_class_weights, positive_weights, use_weighted_loss

    torch.manual_seed(0)
    ids = torch.randint(5, 100, (6, 7))
    single = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=3, ignore_mismatched_sizes=True
    ).eval()
    labels = torch.tensor([0, 0, 0, 0, 1, 2])
    weights = balanced_class_weights(labels, 3)
    assert weights.tolist() == pytest.approx(
        compute_class_weight("balanced", classes=np.arange(3), y=labels.numpy()).tolist()
    )
    plain = single(input_ids=ids, labels=labels).loss
    handle = use_weighted_loss(single, "single_label", weights)
    out = single(input_ids=ids, labels=labels)
    assert out.loss.item() == pytest.approx(
        torch.nn.CrossEntropyLoss(weight=weights)(out.logits, labels).item(), abs=1e-6
    )
    assert out.loss.item() != pytest.approx(plain.item(), abs=1e-4)
    handle.remove()
    multi = AutoModelForSequenceClassification.from_pretrained(
        tiny_bert_dir, num_labels=2, problem_type="multi_label_classification"
    ).eval()
    targets = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    pos = positive_weights(targets)
    assert pos.tolist() == pytest.approx([4 / 2, 5 / 1])
    use_weighted_loss(multi, "multi_label", pos)
    out = multi(input_ids=ids, labels=targets)
    assert out.loss.item() == pytest.approx(
        torch.nn.BCEWithLogitsLoss(pos_weight=pos)(out.logits, targets).item(), abs=1e-6
    )


# ---- local data conventions ---------------------------------------------------------------------------------


def test_glue_tsv_folder_and_save_to_disk_folder(tmp_path):
    """GLUE's own TSV layout (quotes are text, dev.tsv is validation) and a save_to_disk folder, both loaded."""
    from datasets import Dataset, DatasetDict

    glue = tmp_path / "MRPC"
    glue.mkdir()
    header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    rows = [f"{i % 2}\t{i}\t{i + 100}\tHe said \"yes {i}\tShe said 'no {i}\n" for i in range(30)]
    (glue / "train.tsv").write_text(header + "".join(rows[:24]))
    (glue / "dev.tsv").write_text(header + "".join(rows[24:]))
    data = build_data(TextClassificationConfig(glue_task="mrpc", dataset=str(glue)))
    assert data.splits["validation"]["text"][0] == 'He said "yes 24'  # a lone quote is text, not a quoted field
    assert data.splits["validation"]["text_pair"][0] == "She said 'no 24"
    assert len(data.splits["validation"]) == 6 and len(data.splits["test"]) >= 1

    saved = tmp_path / "saved"
    DatasetDict(
        {"train": Dataset.from_dict({"review": [f"text {i}" for i in range(40)], "stars": [i % 3 for i in range(40)]})}
    ).save_to_disk(saved)
    data = build_data(TextClassificationConfig(dataset=str(saved), text_column="review", label_column="stars"))
    assert data.label_names == ["0", "1", "2"] and data.problem_type == "single_label"
    assert sum(len(s) for s in data.splits.values()) == 40


def test_a_text_with_two_labels_is_a_counted_warning(tmp_path):
    rows = [(f"text {i}", i % 2) for i in range(30)] + [("text 1", 0), ("text 2", 1), ("text 2", 1)]
    path = write_csv(tmp_path / "clash.csv", ["text", "label"], rows)
    notes = build_data(TextClassificationConfig(dataset=str(path))).notes
    assert [n for n in notes if n.startswith("warning: 2 distinct text(s) appear with two or more different labels")], (
        notes
    )


# ---- bad inputs: one line, exit 2, nothing written ------------------------------------------------------------


def bad_files(folder):
    write_csv(folder / "pairs.csv", ["text", "other", "label"], [(f"a {i}", f"b {i}", i % 2) for i in range(30)])
    write_csv(folder / "words.csv", ["text", "label"], [(f"a {i}", ["low", "high"][i % 2]) for i in range(30)])
    write_csv(folder / "empty_tags.csv", ["text", "tags"], [(f"a {i}", "") for i in range(30)])
    write_csv(folder / "floats.csv", ["text", "label"], [(f"a {i}", i / 7) for i in range(30)])
    write_csv(
        folder / "dupes.csv", ["text", "label"], [("same", i % 2) for i in range(28)] + [("other", 0), ("third", 1)]
    )
    (folder / "broken.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n{"text": broken\n')
    (folder / "header.csv").write_text("text,label\n")


BAD = {
    "pair column missing": (["--dataset", "pairs.csv", "--text_pair_column", "second"], "has no column 'second'"),
    "regression labels not numbers": (
        ["--dataset", "words.csv", "--problem_type", "regression"],
        "regression labels must be numbers",
    ),
    "empty label sets everywhere": (
        ["--dataset", "empty_tags.csv", "--label_column", "tags", "--label_delimiter", ";"],
        "empty label set in every row",
    ),
    "class weights with detected regression": (
        ["--dataset", "floats.csv", "--class_weights", "balanced"],
        "--class_weights applies to classification",
    ),
    "unknown GLUE task": (["--glue_task", "glu"], "unknown --glue_task 'glu'"),
    "almost all duplicates": (["--dataset", "dupes.csv"], "distinct examples remain after removing 27 duplicate rows"),
    "malformed JSONL line": (["--dataset", "broken.jsonl"], "line 3 is not valid JSON"),
    "CSV with a header and no rows": (["--dataset", "header.csv"], "has a header ('text,label') and no rows"),
    "metric of another problem type": (
        ["--dataset", "floats.csv", "--metric_for_best", "accuracy"],
        "is not computed for regression",
    ),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_and_writes_nothing(name, tmp_path, tiny_bert_dir, capsys):
    bad_files(tmp_path)
    flags, needle = BAD[name]
    flags = [str(tmp_path / f) if f.endswith((".csv", ".jsonl")) else f for f in flags]
    run_dir = tmp_path / "run"
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(run_dir), "--model", str(tiny_bert_dir), *flags])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_info.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not run_dir.exists()
