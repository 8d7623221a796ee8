"""One Python process runs many trainings, each with its own precision, and none depends on what ran before.

Real training both ways, not mocks: bf16 autocast runs on every CPU (natively where the CPU has AVX-512 BF16 or
AMX, emulated and slower elsewhere, which a tiny model does not notice), and `auto` picks whatever this machine
picks. Accelerate keeps one state per process and refuses a second Accelerator with another precision; before
the fix, the second run here raised "AcceleratorState has already been initialized".
"""

import json

import torch
from conftest import train_tiny_sentiment
from safetensors.torch import load_file

from finetune.commands import evaluate
from finetune.core import precision
from finetune.tasks.runs import open_run


def test_fp32_bf16_auto_fp32_back_to_back_and_evaluate_repeats_each(tiny_bert_dir, tweets_small_csv, tmp_path, capsys):
    auto = precision.choose("auto").precision  # bf16 on a native-bf16 CPU, fp32 elsewhere
    runs = {}
    for name, requested in (("fp32", "no"), ("bf16", "bf16"), ("auto", "auto"), ("fp32_again", "no")):
        runs[name] = train_tiny_sentiment(
            tmp_path / name,
            tiny_bert_dir,
            tweets_small_csv,
            mixed_precision=requested,
            compare=False,
            max_train_samples=64,
        )
    trained = {name: json.loads((path / "results.json").read_text())["models"][0] for name, path in runs.items()}

    expected = {"fp32": "fp32", "bf16": "bf16", "auto": "bf16" if auto == "bf16" else "fp32", "fp32_again": "fp32"}
    assert {name: entry["training_precision"] for name, entry in trained.items()} == expected
    # Test numbers are computed in fp32 whatever training used, so any machine can repeat them.
    assert {entry["test_precision"] for entry in trained.values()} == {"fp32"}
    # The first and last runs are the same fp32 run: nothing of the bf16 runs in between leaked into the last.
    weights = {name: load_file(str(path / "model.safetensors")) for name, path in runs.items()}
    assert weights["fp32"].keys() == weights["fp32_again"].keys()
    assert all(torch.equal(weights["fp32"][k], weights["fp32_again"][k]) for k in weights["fp32"])
    assert trained["fp32"]["history"] == trained["fp32_again"]["history"]
    assert trained["fp32"]["test"] == trained["fp32_again"]["test"]
    # bf16 really changed the arithmetic of training, so the comparison above is not vacuous. (The weights, not the
    # rounded loss: four steps of a 32-wide model can round to the same loss and accuracy in both precisions.)
    assert any(not torch.equal(weights["fp32"][k], weights["bf16"][k]) for k in weights["fp32"])

    # finetune evaluate repeats the bf16-trained run's test numbers exactly, and says it computed in fp32.
    capsys.readouterr()
    report = evaluate.evaluate_run(open_run(runs["bf16"]), progress=False)
    assert report["precision"] == "fp32" and "note" not in report
    assert {k: round(v, 5) for k, v in report["metrics"].items()} == trained["bf16"]["test"]
