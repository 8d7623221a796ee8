"""Nothing in a run directory runs code when the toolkit reads it, and a damaged weights file is named
(finetune/core/checkpoints/safeload.py).

A real run stopped after 2 of its 4 steps gives a real checkpoint; each of its files in turn is replaced by a
crafted pickle whose loading would create a marker file, and `--resume` must refuse in one line naming that file
(exit 2) with no marker created. A cut-short model.safetensors is named in one line by predict, evaluate, export
and --resume. (That exported and pushed files hold no local path: tests/test_export.py and tests/test_hub.py.)
"""

import os
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_resume_checks import args, run_main_plain  # noqa: E402
from test_run_dir import run_main  # noqa: E402

from finetune.commands import evaluate, export, predict  # noqa: E402
from finetune.core.checkpoints.safeload import PICKLED  # noqa: E402

MARKER = Path(os.environ.get("TMPDIR", "/tmp")) / f"finetune-safeload-marker-{os.getpid()}"


class Crafted:
    """What an attacker leaves in a run directory: unpickling it creates MARKER (it could do anything)."""

    def __reduce__(self):
        return (Path.touch, (MARKER,))


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, tiny_bert_dir, tweets_small_csv):
    root = tmp_path_factory.mktemp("safeload")
    out = root / "run"
    assert run_main_plain(args(out, tiny_bert_dir, tweets_small_csv, "--stop_after_steps", "2")) == 130
    return {"out": out, "model": tiny_bert_dir, "data": tweets_small_csv}


@pytest.fixture
def copy(interrupted, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(interrupted["out"], out)
    return {**interrupted, "out": out}


def newest_checkpoint(run: Path) -> Path:
    return sorted((run / "checkpoints" / "pretrained").glob("step_*"))[-1]


def resume(copy, capsys):
    MARKER.unlink(missing_ok=True)
    code, errors, _ = run_main(args(copy["out"], copy["model"], copy["data"], "--resume"), capsys)
    ran_code = MARKER.exists()
    MARKER.unlink(missing_ok=True)
    return code, errors, ran_code


def test_a_crafted_pickle_in_any_checkpoint_file_runs_nothing_on_resume(copy, capsys):
    checkpoint = newest_checkpoint(copy["out"])
    files = sorted(p.name for p in checkpoint.iterdir())
    # what Accelerate's save_state wrote (+ ours): each kind of file is checked before anything is loaded
    assert {
        "model.safetensors",
        "optimizer.bin",
        "custom_checkpoint_0.pkl",
        "random_states_0.pkl",
        "train_state.json",
        "fingerprint.json",
    } <= set(files)
    assert all(name.endswith((".json", ".safetensors")) or any(Path(name).match(p) for p in PICKLED) for name in files)
    original = {name: (checkpoint / name).read_bytes() for name in files}
    crafted = {
        "a torch.save archive": lambda path: torch.save({"state": Crafted()}, path),
        "a plain pickle": lambda path: path.write_bytes(pickle.dumps(Crafted())),
    }
    for name in files:
        for how, write in crafted.items():
            write(checkpoint / name)
            code, errors, ran_code = resume(copy, capsys)
            assert not ran_code, (name, how)
            assert code == 2 and len(errors) == 1 and str(checkpoint / name) in errors[0], (name, how, errors)
            (checkpoint / name).write_bytes(original[name])
    assert resume(copy, capsys)[:2] == (0, [])  # the untouched checkpoint still resumes


def test_a_pickle_holding_only_data_still_resumes(copy, capsys):
    """The check refuses code, not pickles: the files Accelerate writes (tensors, numbers, numpy RNG arrays) pass."""
    checkpoint = newest_checkpoint(copy["out"])
    state = torch.load(checkpoint / "custom_checkpoint_0.pkl", weights_only=True)
    torch.save(state, checkpoint / "custom_checkpoint_0.pkl")
    assert resume(copy, capsys) == (0, [], False)


def cut_short(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_a_truncated_checkpoint_weights_file_is_named_on_resume(copy, capsys):
    weights = newest_checkpoint(copy["out"]) / "model.safetensors"
    cut_short(weights)
    code, errors, _ = resume(copy, capsys)
    assert code == 2 and len(errors) == 1, errors
    assert str(weights) in errors[0] and "cut short" in errors[0] and "--overwrite" in errors[0]


def test_a_truncated_model_is_named_by_every_reader(sentiment_run, tmp_path, capsys):
    from test_evaluate_predict import error_lines

    run = tmp_path / "run"
    shutil.copytree(sentiment_run, run, ignore=shutil.ignore_patterns("checkpoints", "onnx"))
    for weights in (run / "model.safetensors", run / "scratch" / "model.safetensors"):
        cut_short(weights)
        for verb, argv in (
            (predict.main, [str(weights.parent), "lovely crew"]),
            (evaluate.main, [str(weights.parent)]),
            (export.main, [str(weights.parent)]),
        ):
            capsys.readouterr()
            with pytest.raises(SystemExit) as exit_info:
                verb(argv)
            errors = error_lines(capsys.readouterr().err)
            assert exit_info.value.code == 2 and len(errors) == 1, (verb, errors)
            assert str(weights) in errors[0] and "cut short" in errors[0], errors
        assert not (weights.parent / "onnx").exists()
