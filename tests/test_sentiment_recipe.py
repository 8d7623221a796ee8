"""The sentiment recipe end to end, exact resume, and every documented bad input."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune.core import engine
from finetune.core.run_directory import finish_run_dir
from recipes.sentiment import SentimentConfig, main, run


def tiny_config(tmp_path, model, dataset, **overrides):
    base = dict(
        output_dir=str(tmp_path / "run"),
        model=str(model),
        dataset=str(dataset),
        max_length=32,
        batch_size=8,
        eval_batch_size=32,
        max_train_samples=160,
        num_epochs=2,
        eval_steps=10,
        checkpoint_steps=5,
        learning_rate=1e-3,
        compare=False,
        log_steps=5,
    )
    base.update(overrides)
    return SentimentConfig(**base)


@pytest.mark.slow
def test_end_to_end_with_packaged_minilm_beats_majority(tmp_path, tweets_small_csv, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "--output_dir",
            str(out),
            "--dataset",
            str(tweets_small_csv),
            "--max_train_samples",
            "640",
            "--num_epochs",
            "1",
            "--eval_steps",
            "10",
            "--max_length",
            "48",
            "--scratch_layers",
            "2",
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    pretrained, scratch = results["models"]
    assert (pretrained["role"], scratch["role"]) == ("pretrained", "scratch")
    test_labels = _test_labels(out, tweets_small_csv)
    majority = max(test_labels.count(label) for label in set(test_labels)) / len(test_labels)
    assert pretrained["test"]["accuracy"] > majority + 0.05, (pretrained["test"], majority)
    for key in ("parameters", "train_seconds", "samples_per_second"):
        assert pretrained[key] > 0 and scratch[key] > 0
    assert (out / "learning_curves.png").stat().st_size > 10_000
    assert (out / "config.yaml").is_file() and (out / "scratch" / "config.json").is_file()
    table = capsys.readouterr().out
    assert "scratch-transformer" in table and "accuracy" in table

    from transformers import pipeline  # the run directory is a model directory

    classify = pipeline("text-classification", model=str(out))
    assert classify("I love this airline, great flight")[0]["label"] in ("negative", "positive")

    predict = subprocess.run(
        [sys.executable, "-m", "finetune.cli", "predict", str(out), "worst delay ever"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert predict.returncode == 0, predict.stderr
    assert json.loads(predict.stdout.splitlines()[0])["label"] in ("negative", "positive")


def _test_labels(run_dir, csv_path):
    from finetune.data.text import load_text_classification

    data = load_text_classification(str(csv_path), seed=42)
    return list(data.splits["test"]["label"])


def _weights(path):
    return load_file(str(Path(path) / "model.safetensors"))


@pytest.mark.parametrize("stop_at", [7, 27])  # mid first epoch; mid second epoch, after an epoch-end checkpoint
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, tiny_bert_dir, tweets_small_csv, stop_at):
    from finetune.core.engine import TrainingInterrupted

    straight = tiny_config(tmp_path / "a", tiny_bert_dir, tweets_small_csv)
    run(straight)

    interrupted = tiny_config(tmp_path / "b", tiny_bert_dir, tweets_small_csv, stop_after_steps=stop_at)
    with pytest.raises(TrainingInterrupted):
        run(interrupted)
    assert not (Path(interrupted.output_dir) / "model.safetensors").exists()
    run(tiny_config(tmp_path / "b", tiny_bert_dir, tweets_small_csv, resume=True))

    # The saved model holds the best weights; the last checkpoint holds the last ones: both must agree.
    last = lambda out: engine.latest_checkpoint(Path(out) / "checkpoints" / "pretrained")
    for a, b in [
        (_weights(straight.output_dir), _weights(interrupted.output_dir)),
        (_weights(last(straight.output_dir)), _weights(last(interrupted.output_dir))),
    ]:
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    history_a = json.loads((Path(straight.output_dir) / "results.json").read_text())["models"][0]["history"]
    history_b = json.loads((Path(interrupted.output_dir) / "results.json").read_text())["models"][0]["history"]
    assert history_a == history_b


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def _run_cli(argv, capsys):
    """Run the recipe's entry point; return (exit code, stderr lines)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return exit_info.value.code, err


BAD_INPUTS = {
    "missing text column": (["--text_column", "sentence"], "no column 'sentence'"),
    "label outside the set": (["--labels", "negative", "neutral"], "'positive' is not among the expected labels"),
    "hub model offline": (["--model", "bert-base-uncased"], "HF_HUB_OFFLINE"),
    "hub dataset offline": (["--dataset", "stanfordnlp/sst2"], "HF_HUB_OFFLINE"),
    "bad config key": (["--learning_rat", "0.1"], "learning_rat"),
    "bad value": (["--batch_size", "zero"], "batch_size"),
    "missing model folder": (["--model", "./no/such/model"], "does not exist"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_the_earlier_run_is_intact(
    name, tmp_path, tiny_bert_dir, tweets_small_csv, capsys
):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"earlier": "run"}')
    (out / "model.safetensors").write_bytes(b"earlier weights")
    finish_run_dir(out)  # a finished run: its manifest lists these files, so --overwrite may replace them
    before = _snapshot(out)
    extra, needle = BAD_INPUTS[name]
    argv = [
        "--output_dir",
        str(out),
        "--overwrite",
        "--model",
        str(tiny_bert_dir),
        "--dataset",
        str(tweets_small_csv),
        *extra,
    ]
    code, err = _run_cli(argv, capsys)
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert _snapshot(out) == before


def test_empty_dataset(tmp_path, tiny_bert_dir, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    code, err = _run_cli(
        ["--output_dir", str(tmp_path / "run"), "--model", str(tiny_bert_dir), "--dataset", str(empty)], capsys
    )
    assert code == 2 and "empty" in err[0]
    assert not (tmp_path / "run").exists()


def test_existing_run_is_refused_without_overwrite(tmp_path, tiny_bert_dir, tweets_small_csv, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text("{}")
    finish_run_dir(out)
    before = _snapshot(out)
    code, err = _run_cli(
        ["--output_dir", str(out), "--model", str(tiny_bert_dir), "--dataset", str(tweets_small_csv)], capsys
    )
    assert code == 2 and "--overwrite" in err[0] and "--resume" in err[0]
    assert _snapshot(out) == before


def test_resume_without_checkpoints(tmp_path, tiny_bert_dir, capsys):
    code, err = _run_cli(["--output_dir", str(tmp_path / "nothing"), "--resume", "--model", str(tiny_bert_dir)], capsys)
    assert code == 2 and "nothing to resume" in err[0]


def test_cli_error_has_no_traceback(tmp_path):
    """Through the real console entry point, in a fresh process."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune.cli",
            "train",
            "sentiment",
            "--output_dir",
            str(tmp_path / "r"),
            "--model",
            "bert-base-uncased",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert lines[-1].startswith("error: ") and "minilm" in lines[-1]
