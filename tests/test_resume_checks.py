"""--resume continues the run it finds, and no other (finetune/core/checkpoints/resume.py).

An interrupted run (stopped after 2 of 4 steps) is resumed with one fingerprinted field changed at a time: each
is refused in one line that names the field and the fix, and the run directory comes out byte for byte the
same. The fields that may change (flagged "resume" in their metadata) are changed together, and the resumed run
still holds exactly the weights of a run that never stopped. `--stop_after_steps` followed by the printed advice
finishes.
"""

import dataclasses
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import (
    tiny_run_flags,
    write_tweets_csv,  # noqa: E402
)
from test_run_dir import run_main, snapshot  # noqa: E402

from finetune.core.checkpoints import resume  # noqa: E402
from finetune.core.config import TrainingConfig, may_change_on_resume  # noqa: E402
from finetune.core.errors import UserError  # noqa: E402
from recipes.sentiment import SentimentConfig  # noqa: E402


def args(out, model, dataset, *extra):
    return tiny_run_flags(
        out, model, dataset, "--max_steps", "4", "--checkpoint_steps", "1", "--learning_rate", "1e-3", *extra
    )


def with_flag(argv, flag, *values):
    """argv with --flag set to values (replaced if present, else added)."""
    argv = list(argv)
    if flag in argv:
        i = argv.index(flag)
        end = i + 1
        while end < len(argv) and not argv[end].startswith("--"):
            end += 1
        del argv[i:end]
    return argv + [flag, *values]


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, tiny_bert_dir, tweets_small_csv):
    """A run stopped after 2 of its 4 steps, with its own copies of the model and the data (edited by some tests)."""
    root = tmp_path_factory.mktemp("interrupted")
    model, data = root / "model", root / "data.csv"
    shutil.copytree(tiny_bert_dir, model)
    shutil.copy(tweets_small_csv, data)
    out = root / "run"
    assert run_main_plain(args(out, model, data, "--stop_after_steps", "2")) == 130
    return {"root": root, "model": model, "data": data, "out": out}


def run_main_plain(argv):
    from recipes.sentiment import main

    try:
        return main(argv)
    except SystemExit as exit_info:
        return exit_info.code


@pytest.fixture
def copy(interrupted, tmp_path):
    """A private copy of the interrupted run, model and data (paths inside the run are relative: it moves whole)."""
    root = tmp_path / "copy"
    shutil.copytree(interrupted["root"], root)
    return {"root": root, "model": root / "model", "data": root / "data.csv", "out": root / "run"}


CHANGED = {  # flag -> new value(s), and what the one error line must name
    "--batch_size": (["4"], "--batch_size is 4, the checkpoint was trained with 8"),
    "--max_train_samples": (["64"], "--max_train_samples is 64"),
    "--max_length": (["48"], "--max_length is 48"),
    "--learning_rate": (["2e-3"], "--learning_rate is 0.002"),
    "--seed": (["7"], "--seed is 7"),
    "--gradient_accumulation_steps": (["2"], "--gradient_accumulation_steps is 2"),
    "--warmup_ratio": (["0.5"], "--warmup_ratio is 0.5"),
    "--max_eval_samples": (["16"], "--max_eval_samples is 16"),
    "--weight_decay": (["0.1"], "--weight_decay is 0.1"),
    "--labels": (["positive", "negative"], "--labels is positive negative"),
    "--lora": ([], "--lora is True"),
    "--text_column": (["label"], "--text_column is label"),
}


@pytest.mark.parametrize("flag", list(CHANGED))
def test_a_changed_field_is_refused_and_nothing_changes(flag, copy, capsys):
    values, needle = CHANGED[flag]
    before = snapshot(copy["root"])
    argv = with_flag(args(copy["out"], copy["model"], copy["data"]), flag, *values) + ["--resume"]
    code, err, _ = run_main(argv, capsys)
    assert code == 2 and len(err) == 1, err
    assert needle in err[0] and "--overwrite" in err[0] and "Put the value back" in err[0], err
    assert snapshot(copy["root"]) == before


@pytest.mark.parametrize(
    "what",
    ["another dataset file", "the dataset file edited", "another model", "the model's config edited", "more processes"],
)
def test_changed_data_model_or_processes_are_refused(what, copy, tiny_bert_dir, tweets_small_csv, monkeypatch, capsys):
    model, data = copy["model"], copy["data"]
    if what == "another dataset file":  # (a moved file with the same contents would resume: see below)
        data = write_tweets_csv(copy["root"] / "other.csv", per_class=500, skip=100)
        needle = "the dataset at --dataset changed"
    elif what == "the dataset file edited":
        with open(data, "a") as f:
            f.write("one more tweet,positive\n")
        needle = "the dataset at --dataset changed"
    elif what == "another model":
        model = "minilm"
        needle = "--model is minilm"
    elif what == "the model's config edited":
        config = json.loads((model / "config.json").read_text())
        config["hidden_dropout_prob"] = 0.3
        (model / "config.json").write_text(json.dumps(config))
        needle = "the model at --model changed"
    else:
        monkeypatch.setenv("WORLD_SIZE", "2")
        needle = "trained on 1 process(es), this run has 2"
    before = snapshot(copy["out"])
    code, err, _ = run_main(args(copy["out"], model, data, "--resume"), capsys)
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert snapshot(copy["out"]) == before


def test_max_steps_below_the_steps_done_is_refused(copy, capsys):
    before = snapshot(copy["root"])
    argv = with_flag(args(copy["out"], copy["model"], copy["data"]), "--max_steps", "1") + ["--resume"]
    code, err, _ = run_main(argv, capsys)
    assert code == 2 and "--max_steps 1 is below the 2 steps already trained" in err[0], err
    assert snapshot(copy["root"]) == before


def weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def test_allowed_changes_still_resume_exactly(copy, capsys):
    """Every logging/checkpointing/evaluation-batch knob changed on resume: the same weights as a straight run."""
    straight = copy["root"] / "straight"
    assert run_main_plain(args(straight, copy["model"], copy["data"])) == 0
    argv = args(copy["out"], copy["model"], copy["data"], "--resume")
    for flag, value in [
        ("--log_steps", "1"),
        ("--checkpoint_steps", "3"),
        ("--keep_checkpoints", "1"),
        ("--save_only_model", "true"),
        ("--eval_batch_size", "16"),
        ("--stop_after_steps", "9"),
        ("--gradient_checkpointing", "true"),
    ]:
        assert flag.lstrip("-") in may_change_on_resume(SentimentConfig)
        argv = with_flag(argv, flag, value)
    code, err, _ = run_main(argv, capsys)
    assert code == 0, err
    a, b = weights(straight), weights(copy["out"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    results = json.loads((copy["out"] / "results.json").read_text())["models"][0]
    assert results["steps"] == 4


def test_the_printed_advice_after_stop_after_steps_finishes_the_run(copy, capsys):
    """`resume with the same command plus --resume`, taken literally (--stop_after_steps 2 still in it)."""
    code, err, _ = run_main(
        args(copy["out"], copy["model"], copy["data"], "--stop_after_steps", "2", "--resume"), capsys
    )
    assert code == 0, err
    assert json.loads((copy["out"] / "results.json").read_text())["models"][0]["steps"] == 4


def test_a_finished_run_continues_when_max_steps_grows(copy, capsys):
    assert run_main(args(copy["out"], copy["model"], copy["data"], "--resume"), capsys)[0] == 0
    code, err, _ = run_main(
        with_flag(args(copy["out"], copy["model"], copy["data"]), "--max_steps", "6") + ["--resume"], capsys
    )
    assert code == 0, err
    assert json.loads((copy["out"] / "results.json").read_text())["models"][0]["steps"] == 6


def test_every_field_either_may_change_or_is_fingerprinted():
    """The fields' own flags are the whole story: a new config field is fingerprinted unless flagged "resume"."""
    from recipes.image_classification import ImageClassificationConfig
    from recipes.text_generation import TextGenerationConfig

    for cls in (SentimentConfig, TextGenerationConfig, ImageClassificationConfig):
        config = cls(output_dir="runs/x", dataset="no/such/local/file.csv")
        printed = resume.fingerprint(config)
        for field in [f.name for f in dataclasses.fields(config)]:  # (not ClassVars such as hub_example)
            assert (field in may_change_on_resume(cls)) != (field in printed), (cls.__name__, field)


def test_moved_data_and_model_still_resume(copy, capsys):
    """The fingerprint holds what a local path holds, not the path: a moved folder resumes."""
    moved = copy["root"].parent / "moved"
    copy["root"].rename(moved)
    code, err, _ = run_main(args(moved / "run", moved / "model", moved / "data.csv", "--resume"), capsys)
    assert code == 0, err


def test_a_new_field_flagged_may_change_is_left_out_of_the_fingerprint():
    """A recipe's own field says it may change on resume in its metadata; no list elsewhere needs it."""

    @dataclasses.dataclass
    class WithExtras(TrainingConfig):
        report_every: int = dataclasses.field(default=5, metadata={"help": "x", "resume": "may_change"})
        beam_size: int = dataclasses.field(default=1, metadata={"help": "x"})

    printed = resume.fingerprint(WithExtras(output_dir="runs/x"))
    assert "report_every" not in printed and "beam_size" in printed
    resume.check_resume(WithExtras(output_dir="runs/x", report_every=50), printed, "runs/x")
    with pytest.raises(UserError, match="--beam_size is 4, the checkpoint was trained with 1"):
        resume.check_resume(WithExtras(output_dir="runs/x", beam_size=4), printed, "runs/x")
