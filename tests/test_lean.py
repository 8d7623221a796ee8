"""Lean run directories (finetune/core/checkpoints/lean.py): LoRA checkpoints hold only the trainable weights and still
resume
exactly; a full fine-tune keeps its best weights once; the last line reports the run directory's size."""

import json
import re
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_run_flags
from test_run_dir import run_main  # noqa: E402

from finetune.core import engine  # noqa: E402
from finetune.core.checkpoints import lean


def args(out, model, dataset, *extra):
    return tiny_run_flags(
        out,
        model,
        dataset,
        "--max_steps",
        "4",
        "--checkpoint_steps",
        "1",
        "--learning_rate",
        "1e-3",
        "--eval_steps",
        "2",
        *extra,
    )


def keys(path):
    with safe_open(str(path), framework="pt") as f:
        return set(f.keys())


def test_lora_checkpoints_hold_only_trainable_weights_and_resume_exactly(
    tmp_path, tiny_bert_dir, tweets_small_csv, capsys
):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run_main(args(straight, tiny_bert_dir, tweets_small_csv, "--lora"), capsys)[0] == 0
    assert (
        run_main(args(stopped, tiny_bert_dir, tweets_small_csv, "--lora", "--stop_after_steps", "2"), capsys)[0] == 130
    )
    code, err, out = run_main(args(stopped, tiny_bert_dir, tweets_small_csv, "--lora", "--resume"), capsys)
    assert code == 0, err

    checkpoint = engine.latest_checkpoint(stopped / "checkpoints" / "pretrained")
    saved = keys(checkpoint / "model.safetensors")
    assert saved and all("lora_" in k or "classifier" in k for k in saved), sorted(saved)[:5]
    assert lean.lean_checkpoint(checkpoint)
    assert keys(stopped / "checkpoints" / "pretrained" / "best" / "model.safetensors") <= saved | {
        k.replace("base_model.model.", "") for k in saved
    }
    # the adapter is the same, bit for bit, as the uninterrupted run's
    a, b = load_file(str(straight / "adapter_model.safetensors")), load_file(str(stopped / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert re.search(r"run directory: .*stopped \(\d+(\.\d)? (KB|MB)\)", out), out[-500:]


def test_a_full_fine_tune_keeps_its_best_weights_once_and_still_resumes_to_them(
    tmp_path, tiny_bert_dir, tweets_small_csv, capsys
):
    out = tmp_path / "run"
    assert run_main(args(out, tiny_bert_dir, tweets_small_csv), capsys)[0] == 0
    best = out / "checkpoints" / "pretrained" / "best"
    assert not (best / "model.safetensors").exists()
    assert json.loads((best / lean.RELEASED_FILE).read_text()) == {"model_dir": "."}
    assert lean.best_weights_file(best) == out / "model.safetensors"
    test_before = json.loads((out / "results.json").read_text())["models"][0]["test"]
    # a finished run resumed (as after a kill while saving): it finds its best weights in the saved model
    assert run_main(args(out, tiny_bert_dir, tweets_small_csv, "--resume"), capsys)[0] == 0
    assert json.loads((out / "results.json").read_text())["models"][0]["test"] == test_before


def test_the_best_copy_stays_when_the_saved_model_differs(tmp_path):
    from safetensors.torch import save_file

    run, best = tmp_path / "run", tmp_path / "run" / "checkpoints" / "m" / "best"
    best.mkdir(parents=True)
    save_file({"w": torch.ones(2)}, str(best / "model.safetensors"))
    save_file({"w": torch.zeros(2)}, str(run / "model.safetensors"))
    assert not lean.release_best_copy(best, run, run)
    assert (best / "model.safetensors").is_file()
    save_file({"w": torch.ones(2)}, str(run / "model.safetensors"))
    assert lean.release_best_copy(best, run, run) and lean.best_weights_file(best) == run / "model.safetensors"


def test_a_tied_frozen_output_layer_stays_out_of_lora_checkpoints(tmp_path, tweets_small_csv, capsys):
    """GPT-2 ties its output layer to the token embedding: frozen under LoRA, neither name may be saved."""
    from tiny_models import tiny_gpt2

    from recipes.text_generation import main as lm_main

    model = tiny_gpt2(tmp_path / "gpt2")
    out = tmp_path / "run"
    capsys.readouterr()
    code = lm_main(
        [
            "--output_dir",
            str(out),
            "--model",
            str(model),
            "--dataset",
            str(tweets_small_csv),
            "--lora",
            "--max_steps",
            "2",
            "--compare",
            "false",
            "--block_size",
            "32",
            "--batch_size",
            "4",
            "--max_train_samples",
            "64",
            "--max_eval_samples",
            "16",
            "--max_test_samples",
            "16",
            "--max_new_tokens",
            "4",
            "--mixed_precision",
            "no",
            "--checkpoint_steps",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err[-2000:]
    checkpoint = engine.latest_checkpoint(out / "checkpoints" / "pretrained")
    saved = keys(checkpoint / "model.safetensors")
    assert saved and all("lora_" in k for k in saved), sorted(k for k in saved if "lora_" not in k)


# ---- no checkpoints once finished: --keep_checkpoints none, finetune clean ------------------------------------------


def cli(argv, capsys):
    """(exit code, stdout, stderr) of `finetune ARGV`."""
    from finetune.cli import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def last_line_size(out):
    """The size the end-of-run line states: "run directory: PATH (SIZE)  ..."."""
    return re.search(r"run directory: \S+ \((\d+(?:\.\d)? (?:B|KB|MB|GB))\)", out.splitlines()[-1]).group(1)


def test_keep_checkpoints_none_keeps_a_pause_resumable_and_removes_the_checkpoints_at_the_end(
    tmp_path, tiny_bert_dir, tweets_small_csv, capsys
):
    from finetune.core import run_directory

    out = tmp_path / "run"
    none = args(out, tiny_bert_dir, tweets_small_csv, "--keep_checkpoints", "none")
    assert run_main([*none, "--stop_after_steps", "2"], capsys)[0] == 130
    assert run_directory.has_checkpoints(out)  # an unfinished run keeps what --resume needs
    code, err, printed = run_main([*none, "--resume"], capsys)
    assert code == 0, err
    assert not (out / "checkpoints").exists() and not run_directory.has_checkpoints(out)
    assert not any(f.startswith("checkpoints/") for f in run_directory.read_manifest(out)["files"])
    assert "removed the checkpoints (--keep_checkpoints none)" in printed
    assert last_line_size(printed) == run_directory.run_size(out)  # the last line states the size after the removal
    assert run_directory.foreign_files(out) == []
    run_directory.check_run_dir(str(out), overwrite=True, resume=False)  # --overwrite accepts the run as its own


def test_finetune_clean_frees_a_finished_runs_checkpoints_and_refuses_an_unfinished_one(
    tmp_path, tiny_bert_dir, tweets_small_csv, capsys
):
    from finetune.core import run_directory

    out = tmp_path / "run"
    assert run_main(args(out, tiny_bert_dir, tweets_small_csv), capsys)[0] == 0  # default: the newest 2 kept
    before, checkpoints = run_directory.folder_bytes(out), run_directory.folder_bytes(out / "checkpoints")
    assert checkpoints > before / 2  # most of a fine-tuned run is checkpoints (weights + AdamW moments)

    code, printed, err = cli(["clean", str(out), "--dry_run"], capsys)
    assert code == 0, err
    assert "checkpoints/pretrained/step_00000004" in printed and "checkpoints/pretrained/step_00000003" in printed
    assert (
        f"would go from {run_directory.human_size(before)} to {run_directory.human_size(before - checkpoints)}"
        in printed
    )
    assert run_directory.folder_bytes(out) == before  # nothing removed

    code, printed, err = cli(["clean", str(out)], capsys)
    assert code == 0, err
    assert not (out / "checkpoints").exists()
    assert f"{run_directory.human_size(checkpoints)} freed; run directory now {run_directory.run_size(out)}" in printed
    assert 0 <= before - checkpoints - run_directory.folder_bytes(out) < 2000  # (the manifest lists fewer files now)
    manifest = run_directory.read_manifest(out)
    assert manifest["status"] == "finished" and not any(f.startswith("checkpoints/") for f in manifest["files"])
    assert all((out / f).is_file() for f in manifest["files"])
    run_directory.check_run_dir(str(out), overwrite=True, resume=False)  # --overwrite still accepts it
    code, printed, err = cli(["predict", str(out), "what a lovely flight"], capsys)  # the model is all there
    assert code == 0 and '"label"' in printed, err
    assert "no checkpoints to remove" in cli(["clean", str(out)], capsys)[1]

    # a run that has not finished keeps its checkpoints: they are its --resume
    stopped = tmp_path / "stopped"
    assert run_main(args(stopped, tiny_bert_dir, tweets_small_csv, "--stop_after_steps", "2"), capsys)[0] == 130
    code, printed, err = cli(["clean", str(stopped)], capsys)
    assert code == 2 and err.count("error: ") == 1 and "has not finished" in err, err
    assert run_directory.has_checkpoints(stopped)
    (tmp_path / "mine").mkdir()
    code, printed, err = cli(["clean", str(tmp_path / "mine")], capsys)
    assert code == 2 and "not a run directory of this toolkit" in err, err
