"""One command per run directory: a second one stops with one line; a killed one's lock and leftovers go.

Real processes throughout: two trainings into one folder (the first held still after its first step until the
second has been refused), a training killed with SIGKILL (its lock file stays, the next run takes it over), a
swap killed while it removed the replaced run, a `finetune predict --output` killed mid-write. And what the other
verbs write into a run (onnx/, merged/, predictions, evaluations) is in the run's manifest afterwards, so
--overwrite still accepts the run.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import tiny_run_flags

from finetune.commands import evaluate, export, predict, study
from finetune.commands import merge as merge_command
from finetune.core import run_directory
from recipes.sentiment import SentimentConfig, main, run

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHILD_ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}

# A process that takes a folder's lock, says so, and keeps it until its standard input closes.
HOLDER = (
    "import sys\nfrom finetune.core import run_directory\nwith run_directory.run_lock(sys.argv[1], "
    "'the test holder'):\n    print('held', flush=True)\n    sys.stdin.read()\n"
)


def args(out, model, dataset, *extra):
    return tiny_run_flags(out, model, dataset, *extra)


def errors(text):
    return [line for line in text.replace("\r", "\n").splitlines() if line.startswith("error: ")]


def wait_for(condition, proc, seconds=180):
    deadline = time.time() + seconds
    while not condition():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture
def holder():
    """holder(folder) -> the pid of another process that now holds folder's lock (released at the test's end)."""
    procs = []

    def hold(folder):
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder)],
            env=CHILD_ENV,
            cwd=ROOT,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        assert proc.stdout.readline() == "held\n", proc.communicate()[1]
        return proc.pid

    yield hold
    for proc in procs:
        proc.communicate(timeout=60)


@pytest.fixture
def finished(tmp_path, sentiment_run):
    """A copy of a finished sentiment run (model, scratch model, checkpoints) to change."""
    out = tmp_path / "runs" / "sentiment"
    shutil.copytree(sentiment_run, out)
    return out


# ---- two commands, one folder -------------------------------------------------------------------------------
def test_a_second_training_into_a_live_run_is_refused_and_the_first_finishes_intact(
    tmp_path, tiny_bert_dir, tweets_small_csv
):
    out, go = tmp_path / "run", tmp_path / "go"
    argv = args(out, tiny_bert_dir, tweets_small_csv)
    first = subprocess.Popen(
        [sys.executable, str(HERE / "crash_child.py"), "hold", "1", "sentiment", *argv],
        env={**CHILD_ENV, "FINETUNE_TEST_GO": str(go)},
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: (out / "config.yaml").exists(), first)  # its folder is made: the first is training
        second = subprocess.run(
            [sys.executable, "-m", "finetune.cli", "train", "sentiment", *argv],
            env=CHILD_ENV,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        go.touch()
        out_first, err_first = first.communicate(timeout=240)

    assert second.returncode == 2 and "Traceback" not in second.stderr, second.stderr[-3000:]
    lines = errors(second.stderr)
    assert len(lines) == 1, lines
    assert (
        f"{out} is in use by another finetune command (pid {first.pid}, finetune train sentiment, since 20" in lines[0]
    )
    assert "run directory:" not in second.stdout
    assert first.returncode == 0, err_first[-3000:]
    assert f"run directory: {out} (" in out_first and "replacing the unfinished attempt" not in out_first
    assert run_directory.read_manifest(out)["status"] == "finished" and run_directory.foreign_files(out) == []
    assert json.loads((out / "results.json").read_text())["models"][0]["test"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["go", "run"]  # the lock file went with the run


def test_a_lock_left_by_a_killed_run_is_taken_over_with_a_note(tmp_path, tiny_bert_dir, tweets_small_csv, capsys):
    out = tmp_path / "run"
    argv = args(out, tiny_bert_dir, tweets_small_csv)
    killed = subprocess.Popen(
        [sys.executable, str(HERE / "crash_child.py"), "step", "1", "sentiment", *argv],
        env=CHILD_ENV,
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = killed.communicate(timeout=240)
    assert killed.returncode == -9, err[-3000:]
    left = json.loads(run_directory.lock_file(out).read_text())  # what a lock file says once its process is gone
    assert left["pid"] == killed.pid and left["command"] == "finetune train sentiment"

    capsys.readouterr()
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert (
        f"note: taking over the lock of {out} left by pid {left['pid']}, "
        f"finetune train sentiment, since {left['since']}" in stdout
    )
    assert run_directory.read_manifest(out)["status"] == "finished"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("verb", ["train", "study", "export", "predict --output", "evaluate --output"])
def test_every_verb_that_writes_into_a_run_is_refused_while_another_command_holds_it(
    verb, finished, holder, tiny_bert_dir, tweets_small_csv, capsys
):
    before = {p: p.stat().st_mtime_ns for p in finished.rglob("*")}
    target = finished.parent / "study" if verb == "study" else finished
    pid = holder(target)
    commands = {
        "train": lambda: main(args(finished, tiny_bert_dir, tweets_small_csv, "--overwrite")),
        "study": lambda: study.main(
            [
                "data_efficiency",
                "sentiment",
                "--sizes",
                "10",
                "--seeds",
                "0",
                "--output_dir",
                str(target),
                "--model",
                str(tiny_bert_dir),
                "--dataset",
                str(tweets_small_csv),
            ]
        ),
        "export": lambda: export.main([str(finished), "--format", "onnx"]),
        "predict --output": lambda: predict.main(
            [str(finished), "--file", str(tweets_small_csv), "--output", str(finished / "predictions.jsonl")]
        ),
        "evaluate --output": lambda: evaluate.main([str(finished), "--output", str(finished / "evaluation.json")]),
    }
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        commands[verb]()
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert (
        len(errors(err)) == 1 and f"{target} is in use by another finetune command (pid {pid}, the test holder" in err
    ), err
    assert {p: p.stat().st_mtime_ns for p in finished.rglob("*")} == before


def test_the_python_api_holds_the_lock_for_the_run_and_releases_it_however_the_run_ends(
    tmp_path, tiny_bert_dir, tweets_small_csv
):
    from finetune.core.engine import on_evaluation
    from finetune.core.errors import UserError

    out = tmp_path / "run"
    config = SentimentConfig(
        output_dir=str(out),
        model=str(tiny_bert_dir),
        dataset=str(tweets_small_csv),
        max_length=32,
        batch_size=8,
        max_train_samples=48,
        max_steps=2,
        eval_steps=1,
        max_eval_samples=32,
        compare=False,
        mixed_precision="no",
    )
    seen = []
    with on_evaluation(lambda *_: seen.append(json.loads(run_directory.lock_file(out).read_text())["pid"])):
        run(config)
    assert seen and set(seen) == {os.getpid()}  # held while it trained
    assert not run_directory.lock_file(out).exists() and not run_directory._held  # released at its end

    broken = dataclasses.replace(config, dataset=str(tmp_path / "missing.csv"), overwrite=True)
    with pytest.raises(UserError):
        run(broken)
    assert not run_directory.lock_file(out).exists() and not run_directory._held  # and after an error


# ---- what other verbs write into a run is the run's -------------------------------------------------------
@pytest.mark.slow
def test_exports_predictions_evaluations_and_merges_are_recorded_so_overwrite_accepts_the_run(
    finished, sentiment_lora_run, tmp_path, tweets_small_csv
):
    assert export.main([str(finished), "--format", "onnx"]) == 0
    assert (
        predict.main(
            [str(finished), "--file", str(tweets_small_csv), "--output", str(finished / "preds" / "all.jsonl")]
        )
        == 0
    )
    assert evaluate.main([str(finished), "--output", str(finished / "evaluation.json")]) == 0
    listed = set(run_directory.read_manifest(finished)["files"])
    assert {
        "onnx/model.onnx",
        "onnx/export.json",
        "preds/all.jsonl",
        "evaluation.json",
        "confusion_matrix_evaluation.png",
    } <= listed
    assert run_directory.foreign_files(finished) == []
    # refused before: "files added after the run"
    run_directory.check_run_dir(str(finished), overwrite=True, resume=False)
    run_directory.check_run_dir(str(finished), overwrite=False, resume=True)

    adapter_run = tmp_path / "lora"
    shutil.copytree(sentiment_lora_run, adapter_run)
    merge_command.merge(adapter_run)
    assert (
        "merged/model.safetensors" in run_directory.read_manifest(adapter_run)["files"]
        and run_directory.foreign_files(adapter_run) == []
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lora", "runs"] and not list(finished.parent.glob(".*"))


# ---- leftovers of killed commands ---------------------------------------------------------------------------
def test_a_swap_killed_while_removing_the_replaced_run_is_cleaned_by_the_next_command(
    finished, tiny_bert_dir, tweets_small_csv, capsys
):
    shutil.rmtree(finished / "scratch")  # (the new run trains the fine-tuned model only)
    run_directory.finish_run_dir(finished)
    argv = args(finished, tiny_bert_dir, tweets_small_csv, "--overwrite")
    killed = subprocess.run(
        [sys.executable, str(HERE / "crash_child.py"), "replaced", "1", "sentiment", *argv],
        env=CHILD_ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    replaced = finished.with_name(f".{finished.name}.replaced")
    # the new run is in place
    assert replaced.is_dir() and run_directory.read_manifest(finished)["status"] == "finished"

    output = finished / "predictions.jsonl"
    assert predict.main([str(finished), "--file", str(tweets_small_csv), "--output", str(output)]) == 0
    assert not replaced.exists()  # the next command that owns the run removed what was left
    assert sorted(p.name for p in finished.parent.iterdir()) == ["sentiment"]
    assert "predictions.jsonl" in run_directory.read_manifest(finished)["files"]


def test_a_half_removed_replaced_run_is_never_brought_back(tmp_path):
    """The new run gone too (deleted by hand): what is left of the replaced one is no run, so it is not restored."""
    run_dir, replaced = tmp_path / "run", tmp_path / ".run.replaced"
    replaced.mkdir()
    (replaced / "config.yaml").write_text("seed: 1\n")
    # the weights went
    run_directory._write_manifest(replaced, status="finished", files=["config.yaml", "model.safetensors"])
    with run_directory.run_lock(run_dir, "test"):
        pass
    assert list(tmp_path.iterdir()) == []

    replaced.mkdir()
    (replaced / "config.yaml").write_text("seed: 1\n")
    # whole (killed between the renames)
    run_directory._write_manifest(replaced, status="finished", files=["config.yaml"])
    with run_directory.run_lock(run_dir, "test"):
        pass
    assert (run_dir / "config.yaml").read_text() == "seed: 1\n" and not replaced.exists()


def test_a_killed_predict_output_leaves_a_partial_file_the_next_one_removes(finished, tweets_small_csv):
    output = finished / "predictions.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "finetune.cli", "predict", str(finished), "--file", "-", "--output", str(output)],
        env=CHILD_ENV,
        cwd=ROOT,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    proc.stdin.write("what a flight\n" * 50)
    proc.stdin.flush()  # (standard input stays open: the command is still reading when it is killed)
    try:
        wait_for(lambda: list(finished.glob(".predictions.jsonl.tmp.*/predictions.jsonl")), proc)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert list(finished.glob(".predictions.jsonl.tmp.*")) and not output.exists()

    assert predict.main([str(finished), "--file", str(tweets_small_csv), "--output", str(output)]) == 0
    assert not list(finished.glob(".predictions.jsonl.tmp.*")) and len(output.read_text().splitlines()) == 1000
    assert run_directory.foreign_files(finished) == [] and not list(finished.parent.glob(".*"))
