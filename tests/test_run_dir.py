"""Run directories: nothing the user had is ever lost.

A run directory is a folder of its own with a manifest (finetune/core/run_directory.py). Each data-loss path of issue
17 is
driven through the real recipe entry point, and every file around it is compared byte for byte afterwards:
    - folders that must never become a run ("", ".", the current folder, home, /, a folder of the user's files);
    - --overwrite that fails part-way (before and after its first checkpoint): the earlier run stays identical;
    - a crash after the folder was made: the corrected rerun replaces the attempt without --overwrite;
    - an interrupted --overwrite: --resume finishes it, and only then is the earlier run replaced;
    - a swap killed half-way between its two renames;
    - files and folders get the user's umask.
"""

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from conftest import tiny_run_flags

from finetune.core import atomic_io, run_directory
from recipes.sentiment import main


def snapshot(folder):
    """{relative path: sha256} of every file, and the folders too (so an extra empty folder counts)."""
    folder = Path(folder)
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
        for p in sorted(folder.rglob("*"))
    }


def run_main(argv, capsys):
    """(exit code, error lines, stdout) of the recipe's entry point."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err, captured.err
    return (
        code,
        [line for line in captured.err.replace("\r", "\n").splitlines() if line.startswith("error: ")],
        captured.out,
    )


def args(out, model, dataset, *extra):
    return tiny_run_flags(out, model, dataset, *extra)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_bert_dir, tweets_small_csv):
    """A real finished 3-step run (copy it before changing anything)."""
    import pytest as _pytest

    out = tmp_path_factory.mktemp("template") / "run"
    with _pytest.MonkeyPatch.context():
        assert main(args(out, tiny_bert_dir, tweets_small_csv, "--checkpoint_steps", "1")) == 0
    return out


@pytest.fixture
def earlier(tmp_path, finished_run):
    out = tmp_path / "runs" / "earlier"
    shutil.copytree(finished_run, out)
    return out


def poison_step(monkeypatch, n):
    """The n-th training forward pass of the BERT classifier returns a NaN loss (the engine stops with one line)."""
    from transformers import BertForSequenceClassification

    forward, calls = BertForSequenceClassification.forward, []

    def poisoned(self, *a, **kw):
        outputs = forward(self, *a, **kw)
        if self.training:
            calls.append(1)
            if len(calls) == n:
                outputs.loss = outputs.loss * float("nan")
        return outputs

    monkeypatch.setattr(BertForSequenceClassification, "forward", poisoned)


# ---- folders that are never a run directory ---------------------------------------------------------------
@pytest.mark.parametrize("where", ["", ".", "cwd", "home", "~", "/", "parent of cwd"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_special_folders_are_refused(where, overwrite, tmp_path, monkeypatch, tiny_bert_dir, tweets_small_csv, capsys):
    work, home = tmp_path / "work", tmp_path / "home"
    for folder in (work, home):
        (folder / "mine").mkdir(parents=True)
        (folder / "notes.txt").write_text("the user's own file")
        (folder / "mine" / "data.csv").write_text("a,b\n")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(home))
    output = {"cwd": str(work), "home": str(home), "parent of cwd": str(tmp_path)}.get(where, where)
    before = snapshot(tmp_path)
    code, err, _ = run_main(
        args(output, tiny_bert_dir, tweets_small_csv, *(["--overwrite"] if overwrite else [])), capsys
    )
    assert code == 2 and len(err) == 1, err
    assert "a folder of its own" in err[0] and "runs/mine" in err[0], err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("resume", [False, True])
def test_a_folder_of_the_users_files_is_never_touched(
    overwrite, resume, tmp_path, tiny_bert_dir, tweets_small_csv, capsys
):
    if overwrite and resume:
        pytest.skip("contradictory flags: refused by the config itself")
    out = tmp_path / "photos"
    (out / "2024").mkdir(parents=True)
    (out / "2024" / "a.jpg").write_bytes(b"\xff\xd8 a photo")
    (out / "results.json").write_text("{}")  # even with a run's file names in it
    (out / "checkpoints" / "x" / "step_1").mkdir(parents=True)
    (out / "checkpoints" / "x" / "step_1" / "train_state.json").write_text("{}")
    before = snapshot(tmp_path)
    flags = ["--overwrite"] * overwrite + ["--resume"] * resume
    code, err, _ = run_main(args(out, tiny_bert_dir, tweets_small_csv, *flags), capsys)
    assert code == 2 and len(err) == 1 and "this toolkit did not write" in err[0] and "2024" in err[0], err
    assert snapshot(tmp_path) == before


def test_a_finished_run_with_added_files_is_not_overwritten(earlier, tiny_bert_dir, tweets_small_csv, capsys):
    (earlier / "my_notes.md").write_text("what I learnt from this run")
    before = snapshot(earlier.parent)
    code, err, _ = run_main(args(earlier, tiny_bert_dir, tweets_small_csv, "--overwrite"), capsys)
    assert code == 2 and len(err) == 1 and "my_notes.md" in err[0] and "does not list" in err[0], err
    assert snapshot(earlier.parent) == before


# ---- --overwrite builds beside the earlier run -------------------------------------------------------------
def test_overwrite_that_fails_before_a_checkpoint_leaves_everything_as_it_was(
    earlier, tiny_bert_dir, tweets_small_csv, monkeypatch, capsys
):
    before = snapshot(earlier.parent)
    poison_step(monkeypatch, 2)
    code, err, _ = run_main(args(earlier, tiny_bert_dir, tweets_small_csv, "--overwrite"), capsys)
    assert code == 2 and len(err) == 1 and "loss became nan at step 2" in err[0], err
    assert snapshot(earlier.parent) == before  # the earlier run byte for byte, and the failed attempt gone


def test_overwrite_that_fails_after_a_checkpoint_keeps_the_attempt_beside_the_earlier_run(
    earlier, tiny_bert_dir, tweets_small_csv, monkeypatch, capsys
):
    before = snapshot(earlier)
    poison_step(monkeypatch, 3)
    argv = args(earlier, tiny_bert_dir, tweets_small_csv, "--checkpoint_steps", "1", "--learning_rate", "1e-3")
    code, err, _ = run_main(argv + ["--overwrite"], capsys)
    assert code == 2 and "loss became nan at step 3" in err[0] and "earlier.unfinished" in err[0], err
    assert snapshot(earlier) == before
    attempt = run_directory.staging_dir(earlier)
    assert run_directory.read_manifest(attempt)["status"] == "running" and run_directory.has_checkpoints(attempt)

    # A plain rerun is refused (the attempt holds checkpoints) and changes nothing ...
    code, err, _ = run_main(argv, capsys)
    assert code == 2 and "already holds an earlier run" in err[0], err
    assert snapshot(earlier) == before
    # ... --resume finishes the attempt, and only then does it replace the earlier run.
    monkeypatch.undo()
    code, err, out = run_main(argv + ["--resume"], capsys)
    assert code == 0, err
    assert not attempt.exists() and not list(earlier.parent.glob(".*"))
    assert snapshot(earlier) != before and run_directory.read_manifest(earlier)["status"] == "finished"
    assert f"run directory: {earlier} (" in out


def test_overwrite_that_succeeds_replaces_the_run_whole(earlier, tiny_bert_dir, tweets_small_csv, capsys):
    (earlier / "checkpoints" / "pretrained" / "step_00000099").mkdir()  # a stale checkpoint would be resumed from
    (earlier / "checkpoints" / "pretrained" / "step_00000099" / "train_state.json").write_text('{"step": 99}')
    run_directory.record_files(earlier, [earlier / "checkpoints" / "pretrained" / "step_00000099" / "train_state.json"])
    code, err, out = run_main(args(earlier, tiny_bert_dir, tweets_small_csv, "--overwrite", "--seed", "7"), capsys)
    assert code == 0, err
    assert not (earlier / "checkpoints" / "pretrained" / "step_00000099").exists()
    assert [p.name for p in earlier.parent.iterdir()] == ["earlier"]  # no staging, no replaced copy
    manifest = run_directory.read_manifest(earlier)
    assert manifest["status"] == "finished" and manifest["files"] == run_directory._run_files(earlier)
    assert "replaces" in manifest and (earlier / "config.yaml").read_text().count("seed: 7") == 1


# ---- unfinished attempts ------------------------------------------------------------------------------------
def test_a_crash_after_the_folder_was_made_does_not_block_the_rerun(tmp_path, tiny_bert_dir, tweets_small_csv, capsys):
    out = tmp_path / "run"
    # what a run killed right after it is left with
    run_directory.prepare_run_dir(str(out), overwrite=False, resume=False)
    (out / "config.yaml").write_text("batch_size: 8\n")
    (out / "logs").mkdir()
    code, err, stdout = run_main(args(out, tiny_bert_dir, tweets_small_csv), capsys)
    assert code == 0, err
    assert "replacing the unfinished attempt" in stdout
    assert run_directory.read_manifest(out)["status"] == "finished" and not (out / "logs").exists()


def test_a_failed_fresh_run_leaves_no_folder(tmp_path, tiny_bert_dir, tweets_small_csv, monkeypatch, capsys):
    empty = tmp_path / "made-by-the-user"
    empty.mkdir()
    for out in (tmp_path / "new", empty):
        poison_step(monkeypatch, 1)
        code, err, _ = run_main(args(out, tiny_bert_dir, tweets_small_csv), capsys)
        assert code == 2 and "loss became nan" in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made-by-the-user"] and not any(empty.iterdir())


def test_an_unfinished_run_with_checkpoints_asks_for_resume_or_overwrite(
    tmp_path, tiny_bert_dir, tweets_small_csv, capsys
):
    out = tmp_path / "run"
    argv = args(out, tiny_bert_dir, tweets_small_csv, "--stop_after_steps", "1")
    code, _, _ = run_main(argv, capsys)
    assert code == 130
    before = snapshot(tmp_path)
    code, err, _ = run_main(args(out, tiny_bert_dir, tweets_small_csv), capsys)
    assert (
        code == 2 and "unfinished run with checkpoints" in err[0] and "--resume" in err[0] and "--overwrite" in err[0]
    ), err
    assert snapshot(tmp_path) == before


# ---- the swap itself ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("killed", ["before the first rename", "between the renames", "before the removal"])
def test_a_swap_killed_half_way_is_completed_or_undone(killed, tmp_path):
    run_dir, staging = tmp_path / "run", tmp_path / "run.unfinished"
    replaced = tmp_path / ".run.replaced"
    for folder, text in ((run_dir, "old"), (staging, "new")):
        folder.mkdir()
        (folder / "results.json").write_text(text)
    run_directory._write_manifest(run_dir, status="finished", files=["results.json"])
    run_directory._write_manifest(staging, status="finished", replaces="run", files=["results.json"])
    if killed != "before the first rename":
        os.replace(run_dir, replaced)
    if killed == "before the removal":
        os.replace(staging, run_dir)
    run_directory.check_run_dir(str(run_dir), overwrite=True, resume=False)  # any later run recovers first
    expected = "old" if killed == "before the first rename" else "new"
    assert not replaced.exists()
    if killed == "before the first rename":  # nothing was swapped: the finished staging is a replacement to redo
        assert (run_dir / "results.json").read_text() == expected
    else:
        assert (
            run_directory.read_manifest(run_dir)["status"] == "finished"
            and (run_dir / "results.json").read_text() == expected
        )


# ---- file modes ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask", [0o002, 0o077])
def test_files_and_folders_get_the_users_umask(umask, tmp_path, tiny_bert_dir, tweets_small_csv, capsys):
    old = os.umask(umask)
    atomic_io._UMASK = None
    try:
        out = tmp_path / "run"
        code, err, _ = run_main(args(out, tiny_bert_dir, tweets_small_csv, "--checkpoint_steps", "1"), capsys)
    finally:
        os.umask(old)
        atomic_io._UMASK = None
    assert code == 0, err
    modes = {str(p.relative_to(out)): p.stat().st_mode & 0o777 for p in out.rglob("*")}
    expected = lambda p: (0o777 if (out / p).is_dir() else 0o666) & ~umask
    wrong = {p: oct(m) for p, m in modes.items() if m != expected(p) and not (out / p).is_symlink()}
    assert not wrong, wrong
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask
    for name in ("config.yaml", "results.json", "model.safetensors", "checkpoints/pretrained/best"):
        assert name in modes
