"""`--glue_task` for all nine GLUE tasks, resolved through the loopback Hub by the real `datasets` client.

One fake `nyu-mll/glue` repository with the nine configurations (GLUE's Hub columns, hidden test labels as -1,
MNLI's matched/mismatched splits); one child process (online, pointed at the fake Hub) builds each task's data
and evaluator, and reports what it resolved. The expected table below is GLUE's definition, written out.
"""

import json
import subprocess
import sys

import pytest
from hub_server import FakeHub
from test_hub_datasets import ROOT, online_env

# task -> (text column, pair column, problem type, selection metric, metrics the evaluator reports)
EXPECTED = {
    "cola": ("sentence", None, "single_label", "matthews_correlation", {"accuracy", "f1", "matthews_correlation"}),
    "sst2": ("sentence", None, "single_label", "accuracy", {"accuracy", "f1"}),
    "mrpc": ("sentence1", "sentence2", "single_label", "f1", {"accuracy", "f1"}),
    "qqp": ("question1", "question2", "single_label", "f1", {"accuracy", "f1"}),
    "stsb": ("sentence1", "sentence2", "regression", "pearson", {"pearson", "spearman", "mse", "mae"}),
    "mnli": ("premise", "hypothesis", "single_label", "accuracy", {"accuracy", "f1"}),
    "qnli": ("question", "sentence", "single_label", "accuracy", {"accuracy", "f1"}),
    "rte": ("sentence1", "sentence2", "single_label", "accuracy", {"accuracy", "f1"}),
    "wnli": ("sentence1", "sentence2", "single_label", "accuracy", {"accuracy", "f1"}),
}


def csv_text(task, split, rows):
    text, pair, problem, _, _ = EXPECTED[task]
    columns = [text] + ([pair] if pair else []) + ["label", "idx"]
    classes = 3 if task == "mnli" else 2
    lines = [",".join(columns)]
    for i in range(rows):
        label = -1 if split.startswith("test") else (f"{(i % 6) * 0.8:.1f}" if problem == "regression" else i % classes)
        values = [f"{task} {split} first {i}"] + ([f"{task} {split} second {i}"] if pair else []) + [str(label), str(i)]
        lines.append(",".join(values))
    return "\n".join(lines) + "\n"


def glue_repo():
    splits = {task: ["train", "validation", "test"] for task in EXPECTED}
    splits["mnli"] = ["train", "validation_matched", "validation_mismatched", "test_matched", "test_mismatched"]
    card = ["---", "configs:"]
    files = {}
    for task, names in splits.items():
        card += [f"- config_name: {task}", "  data_files:"]
        for split in names:
            card += [f"  - split: {split}", f"    path: {task}/{split}-*"]
            files[f"{task}/{split}-00000-of-00001.csv"] = csv_text(task, split, 30 if split == "train" else 5)
    files["README.md"] = "\n".join(card + ["---", "# GLUE-shaped test repository"]) + "\n"
    return files


CHILD = """
import json, torch
from types import SimpleNamespace
from recipes.text_classification import TextClassificationConfig, build_data, choose_metric, make_evaluator
out = {}
for task in %r:
    config = TextClassificationConfig(glue_task=task)
    data = build_data(config)
    metric = choose_metric(config, data.problem_type)
    evaluator = make_evaluator(data.problem_type, len(data.label_names), metric, task)
    k = len(data.label_names)
    labels = torch.tensor(data.splits["validation"]["label"][:4])
    evaluator.add({"labels": labels}, SimpleNamespace(logits=torch.randn(4, k)), lambda x: x)
    out[task] = {"dataset": config.dataset, "config": config.dataset_config, "text": config.text_column,
                 "pair": config.text_pair_column, "problem_type": data.problem_type, "metric": metric,
                 "metrics": sorted(evaluator.compute()), "splits": {n: len(s) for n, s in data.splits.items()},
                 "columns": data.splits["train"].column_names, "validation_text": data.splits["validation"]["text"][0],
                 "labels": data.label_names}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_every_glue_task_resolves_through_the_hub(tmp_path):
    with FakeHub(lifetime=300) as hub:
        hub.add_dataset("nyu-mll/glue", glue_repo())
        proc = subprocess.run(
            [sys.executable, "-c", CHILD % list(EXPECTED)],
            env=online_env(hub.url, tmp_path / "home"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        resolved = json.loads(proc.stdout.strip().splitlines()[-1])
        for task, (text, pair, problem, metric, metrics) in EXPECTED.items():
            got = resolved[task]
            assert (got["dataset"], got["config"]) == ("nyu-mll/glue", task)
            assert (got["text"], got["pair"], got["problem_type"], got["metric"]) == (text, pair, problem, metric), task
            assert set(got["metrics"]) == metrics, task
            assert got["columns"] == (["text", "text_pair", "label"] if pair else ["text", "label"]), task
            # validation is GLUE's own (MNLI: matched); the hidden-label test split is replaced by one carved from train
            expected_validation = "validation_matched" if task == "mnli" else "validation"
            assert got["validation_text"] == f"{task} {expected_validation} first 0"
            assert got["splits"]["validation"] == 5 and got["splits"]["train"] + got["splits"]["test"] == 30
            assert got["labels"] == (
                ["score"] if problem == "regression" else ["0", "1", "2"] if task == "mnli" else ["0", "1"]
            )
            # the files came over HTTP from the fake Hub
            assert hub.requests_to(rf"^/datasets/nyu-mll/glue/resolve/.+/{task}/train-00000-of-00001\.csv$"), task
        assert resolved["mnli"]["splits"]["validation_mismatched"] == 5
