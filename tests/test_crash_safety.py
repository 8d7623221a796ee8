"""Hold up: SIGKILL at any point, Ctrl-C / SIGTERM, a full disk, an unwritable output folder.

The kill chain trains one run in a series of processes, each ended at a seeded random point: SIGKILL (child
processes, tests/crash_child.py) mid-training, inside a checkpoint save, right after a checkpoint's rename, inside
the save of the best weights, while the final model is published; SIGTERM and SIGINT (sent to this process). After
each, the newest checkpoint
must load, and `--resume` goes on. The run it ends with must hold exactly the weights (best and last) and the
history of a run that was never interrupted.
"""

import errno
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from finetune.core import engine
from finetune.core.run_directory import finish_run_dir
from recipes.sentiment import main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CHILD_ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "OMP_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
}


def recipe_args(out, model, dataset):
    """40 optimizer steps (2 epochs of 20), a checkpoint every 3 steps, an evaluation every 10."""
    return [
        "--output_dir",
        str(out),
        "--model",
        str(model),
        "--dataset",
        str(dataset),
        "--max_length",
        "32",
        "--batch_size",
        "8",
        "--eval_batch_size",
        "32",
        "--max_train_samples",
        "160",
        "--num_epochs",
        "2",
        "--eval_steps",
        "10",
        "--checkpoint_steps",
        "3",
        "--learning_rate",
        "1e-3",
        "--compare",
        "false",
        "--log_steps",
        "5",
        "--mixed_precision",
        "no",
    ]


def one_thread(fn, *args):
    """Run in this process with the children's thread count: float sums must happen in the same order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)


def run_child(point, n, args, timeout=240):
    cmd = [sys.executable, str(HERE / "crash_child.py"), point, str(n), "sentiment", *args]
    return subprocess.run(cmd, env=CHILD_ENV, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def assert_latest_checkpoint_loads(out):
    latest = engine.latest_checkpoint(Path(out) / "checkpoints" / "pretrained")
    assert latest is not None, f"no complete checkpoint in {out}"
    state = json.loads((latest / engine.STATE_FILE).read_text())
    assert state["step"] == int(latest.name.split("_")[1])
    weights = load_file(str(latest / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert (latest / "optimizer.bin").stat().st_size > 0
    return state["step"]


def weights(folder):
    return load_file(str(Path(folder) / "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def signal_self_after_step(signum, n, fn, *args):
    """Run fn in this process, sending ourselves `signum` right after the n-th optimizer step (a real signal)."""
    import signal

    from torch.optim.optimizer import register_optimizer_step_post_hook

    count = []
    hook = register_optimizer_step_post_hook(
        lambda *_: count.append(1) or (len(count) == n and os.kill(os.getpid(), signum))
    )
    try:
        return one_thread(fn, *args)
    finally:
        hook.remove()
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_sigkill_sigterm_sigint_at_random_points_then_resume_equals_an_uninterrupted_run(
    tmp_path, tiny_bert_dir, tweets_small_csv, capsys
):
    import signal

    straight = tmp_path / "straight"
    assert one_thread(main, recipe_args(straight, tiny_bert_dir, tweets_small_csv)) == 0

    rng = random.Random(1234)  # the points move if the seed does; each is reached in any 40-step run
    plan = [
        ("best", 1),  # SIGKILL inside the first save of the best weights (step 10)
        ("step", rng.randint(1, 4)),  # SIGKILL mid-training, after an optimizer step, before its checkpoint
        ("save", rng.randint(1, 2)),  # SIGKILL inside a checkpoint save (weights written, the rest not)
        ("sigterm", rng.randint(1, 3)),  # kill(1) / a job scheduler: checkpoint, exit 130 (in this process)
        ("commit", rng.randint(1, 2)),  # SIGKILL right after a checkpoint's rename, before old ones are pruned
        ("sigint", rng.randint(1, 3)),  # Ctrl-C (in this process)
        ("final", 1),
    ]  # SIGKILL while the final model files are moved into the run folder
    out = tmp_path / "chain"
    args = recipe_args(out, tiny_bert_dir, tweets_small_csv)
    steps = []
    for i, (point, n) in enumerate(plan):
        argv = args + (["--resume"] if i else [])
        if point in ("sigint", "sigterm"):
            capsys.readouterr()
            code = signal_self_after_step(getattr(signal, point.upper()), n, main, argv)
            err = capsys.readouterr().err
            assert code == 130, (point, code, err[-2000:])
            assert "resume with the same command plus --resume" in err and "Traceback" not in err
        else:
            proc = run_child(point, n, argv)
            assert proc.returncode == -9, (point, n, proc.returncode, proc.stderr[-2000:])
        steps.append(assert_latest_checkpoint_loads(out))
    assert steps == sorted(steps) and steps[-1] == 40, steps  # progress every time; the last kill came after the end
    assert one_thread(main, args + ["--resume"]) == 0

    # Nothing half-written is left, and the two runs are the same run.
    assert not [
        p for p in out.rglob("*") if ".tmp." in p.name or p.name.startswith(".save.") or p.name.endswith(".old")
    ]
    last = lambda run_dir: engine.latest_checkpoint(run_dir / "checkpoints" / "pretrained")
    assert_same_weights(weights(straight), weights(out))  # the best weights, saved as the model
    assert_same_weights(weights(last(straight)), weights(last(out)))
    history = lambda run_dir: json.loads((run_dir / "results.json").read_text())["models"][0]["history"]
    assert history(straight) == history(out)


def test_sigkill_from_outside_at_a_random_moment_leaves_a_loadable_checkpoint(
    tmp_path, tiny_bert_dir, tweets_small_csv
):
    """No help from the inside: a real `kill -9` once training is under way, at a seeded random delay."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "recipes.sentiment", *recipe_args(out, tiny_bert_dir, tweets_small_csv)]
    proc = subprocess.Popen(cmd, env=CHILD_ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        import time

        deadline = time.time() + 180
        while engine.latest_checkpoint(out / "checkpoints" / "pretrained") is None:
            assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
            time.sleep(0.02)
        time.sleep(random.Random(99).uniform(0.0, 0.3))
        proc.kill()
    finally:
        proc.wait(timeout=60)
    assert_latest_checkpoint_loads(out)
    assert one_thread(main, recipe_args(out, tiny_bert_dir, tweets_small_csv) + ["--resume"]) == 0
    assert (out / "results.json").is_file() and (out / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------------- disks and folders
def snapshot(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def run_main(argv, capsys):
    """(exit code, the `error: ` lines on stderr); progress bars share stderr, a traceback may not."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return exit_info.value.code, [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error: ")]


def test_disk_full_during_a_checkpoint_is_one_line_and_keeps_the_last_checkpoint(
    tmp_path, tiny_bert_dir, tweets_small_csv, monkeypatch, capsys
):
    """ENOSPC injected in the third checkpoint save, after its weights are written (portable: no mount needed)."""
    import accelerate.checkpointing as checkpointing

    original, calls = checkpointing.save, []

    def save(obj, f, *args, **kwargs):
        original(obj, f, *args, **kwargs)
        calls.append(f)
        if (
            str(f).endswith("model.safetensors")
            and len([c for c in calls if str(c).endswith("model.safetensors")]) == 3
        ):
            raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(checkpointing, "save", save)
    out = tmp_path / "run"
    argv = [
        "--output_dir",
        str(out),
        "--model",
        str(tiny_bert_dir),
        "--dataset",
        str(tweets_small_csv),
        "--max_length",
        "32",
        "--batch_size",
        "8",
        "--max_train_samples",
        "160",
        "--checkpoint_steps",
        "3",
        "--eval_steps",
        "10",
        "--compare",
        "false",
        "--mixed_precision",
        "no",
    ]
    code, err = run_main(argv, capsys)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: could not write the checkpoint step_00000009") and "the disk is full" in err[0]
    assert "free some disk space" in err[0] and "step_00000006, is intact" in err[0]
    assert assert_latest_checkpoint_loads(out) == 6
    assert not list((out / "checkpoints" / "pretrained").glob(".*"))  # the half checkpoint is gone


def _mount_tmpfs(path, size):
    path.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def test_a_really_full_disk(tmp_path, tiny_bert_dir, tweets_small_csv, capsys):
    """A 30 MB tmpfs: two checkpoints (12 MB each) and the best weights (4 MB) fit; the third checkpoint not."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "30m"):
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN); the injected ENOSPC test covers the logic")
    try:
        out = disk / "run"
        argv = [
            "--output_dir",
            str(out),
            "--model",
            str(tiny_bert_dir),
            "--dataset",
            str(tweets_small_csv),
            "--max_length",
            "32",
            "--batch_size",
            "8",
            "--max_train_samples",
            "160",
            "--checkpoint_steps",
            "3",
            "--eval_steps",
            "100",
            "--compare",
            "false",
            "--mixed_precision",
            "no",
            "--keep_checkpoints",
            "2",
        ]
        code, err = run_main(argv, capsys)
        assert code == 2 and len(err) == 1, err
        assert err[0].startswith("error: could not write") and "the disk is full" in err[0], err
        step = assert_latest_checkpoint_loads(out)
        assert f"step_{step:08d}, is intact" in err[0]
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True, timeout=30)


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody can write into, root included (chmod for users; the immutable attribute for root)."""
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "results.json").write_text('{"earlier": "run"}')
    finish_run_dir(folder)  # an earlier run (so only the folder's mode stands in the way)

    def writable():
        try:
            (folder / ".probe").touch()
        except OSError:
            return False
        (folder / ".probe").unlink()
        return True

    folder.chmod(0o555)
    undo = ["chmod", "755", str(folder)]
    if writable():  # root ignores the mode bits
        if (
            shutil.which("chattr")
            and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
        ):
            undo = ["chattr", "-i", str(folder)]
        if writable():
            subprocess.run(undo, capture_output=True)
            pytest.skip("cannot make a read-only folder here (root without chattr +i support)")
    yield folder
    subprocess.run(undo, capture_output=True)
    folder.chmod(0o755)


@pytest.mark.parametrize("where", ["the run folder", "its parent"])
def test_unwritable_output_dir_fails_fast_and_touches_nothing(
    where, read_only_dir, tiny_bert_dir, tweets_small_csv, capsys
):
    out = read_only_dir if where == "the run folder" else read_only_dir / "new-run"
    before = snapshot(read_only_dir)
    code, err = run_main(
        ["--output_dir", str(out), "--overwrite", "--model", str(tiny_bert_dir), "--dataset", str(tweets_small_csv)],
        capsys,
    )
    assert code == 2 and len(err) == 1, err
    assert (
        err[0].startswith(f"error: --output_dir {out} is not writable") and "choose a writable --output_dir" in err[0]
    )
    assert snapshot(read_only_dir) == before


def test_output_dir_under_a_file(tmp_path, tiny_bert_dir, tweets_small_csv, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, err = run_main(
        ["--output_dir", str(blocker / "run"), "--model", str(tiny_bert_dir), "--dataset", str(tweets_small_csv)],
        capsys,
    )
    assert code == 2 and len(err) == 1 and "which is a file, not a folder" in err[0], err
    assert blocker.read_text() == "not a folder"


def test_nan_loss_in_a_recipe_names_the_step_and_keeps_the_checkpoint(
    tmp_path, tiny_bert_dir, tweets_small_csv, monkeypatch, capsys
):
    """The engine test covers the mechanism with a toy model; here a real model's loss turns NaN at step 5."""
    from transformers import BertForSequenceClassification

    forward, calls = BertForSequenceClassification.forward, []

    def poisoned(self, *args, **kwargs):
        outputs = forward(self, *args, **kwargs)
        if self.training:
            calls.append(1)
            if len(calls) == 5:
                outputs.loss = outputs.loss * float("nan")
        return outputs

    monkeypatch.setattr(BertForSequenceClassification, "forward", poisoned)
    out = tmp_path / "run"
    code, err = run_main(
        [
            "--output_dir",
            str(out),
            "--model",
            str(tiny_bert_dir),
            "--dataset",
            str(tweets_small_csv),
            "--max_length",
            "32",
            "--batch_size",
            "8",
            "--max_train_samples",
            "160",
            "--checkpoint_steps",
            "3",
            "--compare",
            "false",
            "--mixed_precision",
            "no",
        ],
        capsys,
    )
    assert code == 2 and len(err) == 1, err
    assert "loss became nan at step 5" in err[0] and "step_00000003" in err[0]
    assert assert_latest_checkpoint_loads(out) == 3


def test_ctrl_c_while_the_last_checkpoint_is_written_stops_with_130_and_resumes(
    tmp_path, tiny_bert_dir, tweets_small_csv, capsys, monkeypatch
):
    """A Ctrl-C after the loop's last look at its stop flag (here: while the last step's checkpoint is written) is
    not dropped: exit 130 with the resume hint, no outputs yet, and --resume writes them."""
    import signal

    write_checkpoint = engine.save_checkpoint

    def write_then_signal(setup, state, full=False):
        path = write_checkpoint(setup, state, full)
        if state.step == setup.total_steps:
            os.kill(os.getpid(), signal.SIGINT)  # (a real signal: the engine's handler takes it)
        return path

    monkeypatch.setattr(engine, "save_checkpoint", write_then_signal)
    out = tmp_path / "run"
    args = recipe_args(out, tiny_bert_dir, tweets_small_csv)
    capsys.readouterr()
    assert one_thread(main, args) == 130
    err = capsys.readouterr().err
    assert "interrupted after its last step" in err and "resume with the same command plus --resume" in err, err
    assert assert_latest_checkpoint_loads(out) == 40 and not (out / "results.json").exists()
    monkeypatch.undo()
    assert one_thread(main, args + ["--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["models"][0]["steps"] == 40
