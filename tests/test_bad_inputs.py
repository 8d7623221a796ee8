"""Every command, every documented bad input: exit code 2, one line `error: ...` naming the fix, no traceback,
and an earlier run left exactly as it was.

All through the real entry point, `finetune.cli.main` (in this process: a fresh process per case would cost
~6 s each; tests/test_sentiment_recipe.py::test_cli_error_has_no_traceback covers the console script itself).
Already covered elsewhere, so not repeated here: the sentiment recipe's data and model errors
(tests/test_sentiment_recipe.py), `merge` on a missing / adapter-less / moved-base run (tests/test_lora.py),
and `push` against the Hub: tokens, permissions, repo ids, network (tests/test_hub.py).

Adding a recipe needs nothing here: the train cases run for every task `finetune train` knows, plus that task's
own cases in RECIPE_CASES.
"""

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from finetune import cli
from finetune.core.run_directory import finish_run_dir
from finetune.tasks import registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_models import tiny_gpt2  # noqa: E402

TASKS = registry.names()


def run_cli(argv, capsys):
    """(exit code, the `error: ` lines); a traceback or a second error line fails the test."""
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, [line for line in err.replace("\r", "\n").splitlines() if line.startswith("error: ")]


def snapshot(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def assert_one_line_error(code, err, needle):
    assert code == 2, (code, err)
    assert len(err) == 1 and needle in err[0], err


@pytest.fixture
def earlier_run(tmp_path):
    """A finished run's folder: whatever goes wrong, it must come out byte for byte the same."""
    run = tmp_path / "earlier"
    run.mkdir()
    (run / "results.json").write_text('{"earlier": "run"}')
    (run / "model.safetensors").write_bytes(b"earlier weights")
    (run / "checkpoints" / "pretrained" / "step_00000010").mkdir(parents=True)
    (run / "checkpoints" / "pretrained" / "step_00000010" / "train_state.json").write_text('{"step": 10}')
    finish_run_dir(run)  # the manifest that makes it a run directory --overwrite may replace
    return run


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inputs")
    (folder / "bad.yaml").write_text("learning_rate: [1e-3\n")
    (folder / "list.yaml").write_text("- learning_rate\n- 1e-3\n")
    (folder / "a-file").write_text("not a folder")
    (folder / "empty").mkdir()
    (folder / "text.png").write_text("not a picture")
    return folder


# ---- the command itself -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, needle",
    [
        (["train"], "finetune train needs a task"),
        (["train", "--learning_rate", "1e-3"], "finetune train needs a task"),
        (["train", "no_such_task"], "unknown task 'no_such_task'"),
        (["frobnicate"], "unknown command 'frobnicate'"),
    ],
)
def test_command_line(argv, needle, capsys):
    code, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, needle)
    for task in TASKS:  # the message lists the choices
        if "task" in needle:
            assert task in err[0]


# ---- train: every recipe ------------------------------------------------------------------------------------
# name -> (flags, text the error must hold). {files} and {earlier} are filled in per test.
TRAIN_CASES = {
    "config file missing": (["--config", "{files}/missing.yaml"], "does not exist"),
    "config file not YAML": (["--config", "{files}/bad.yaml"], "is not valid YAML"),
    "config file not a mapping": (["--config", "{files}/list.yaml"], "must hold a mapping"),
    "--config without a path": (["--config"], "--config needs a file path"),
    "unknown flag": (["--learning_rat", "0.1"], "learning_rat"),
    "non-numeric value": (["--batch_size", "eight"], "batch_size"),
    "zero batch size": (["--batch_size", "0"], "--batch_size must be at least 1"),
    "zero epochs": (["--num_epochs", "0"], "--num_epochs must be positive"),
    "negative learning rate": (["--learning_rate=-1e-3"], "--learning_rate must be positive"),
    "warmup ratio of 1": (["--warmup_ratio", "1"], "--warmup_ratio must be in [0, 1)"),
    "unknown precision": (["--mixed_precision", "fp8"], "--mixed_precision must be one of"),
    "zero checkpoint steps": (["--checkpoint_steps", "0"], "--checkpoint_steps must be at least 1"),
    "resume and overwrite": (["--resume", "--overwrite"], "contradict each other"),
    "push without a repo": (["--push_to_hub"], "--hub_repo_id"),
    "output_dir is a file": (["--output_dir", "{files}/a-file"], "is a file, not a folder"),
    "output_dir under a file": (["--output_dir", "{files}/a-file/run"], "which is a file, not a folder"),
    "earlier run without --overwrite": (["--output_dir", "{earlier}"], "pass --overwrite"),
    "resume with nothing to resume": (["--resume", "--output_dir", "{files}/empty"], "nothing to resume"),
}
# Covered for that recipe already (tests/test_sentiment_recipe.py): not repeated.
COVERED = {
    ("sentiment", "unknown flag"),
    ("sentiment", "non-numeric value"),
    ("sentiment", "earlier run without --overwrite"),
    ("sentiment", "resume with nothing to resume"),
}
# A recipe's own bad inputs, cheap ones (caught before any model or data loads).
RECIPE_CASES = {
    "sentiment": {
        "max_length of 1": (["--max_length", "1"], "--max_length must be at least 2"),
        "zero train samples": (["--max_train_samples", "0"], "--max_train_samples must be at least 1"),
    },
    "text_classification": {
        "unknown GLUE task": (["--glue_task", "mnli2"], "unknown --glue_task 'mnli2'"),
        "class weights with regression": (
            ["--problem_type", "regression", "--class_weights", "balanced"],
            "--class_weights applies to classification",
        ),
        "class weights with STS-B": (
            ["--glue_task", "stsb", "--class_weights", "balanced"],
            "--class_weights applies to classification",
        ),
        "unknown problem type": (["--problem_type", "ordinal"], "--problem_type must be one of"),
        "unknown class weights": (["--class_weights", "inverse"], "--class_weights must be none or balanced"),
    },
    "text_generation": {
        "block_size of 1": (["--block_size", "1"], "--block_size must be at least 2"),
        "unknown packing": (["--packing", "zip"], "--packing must be one of"),
        "zero temperature": (["--temperature", "0"], "--temperature must be positive"),
    },
    "translation": {
        "zero beams": (["--num_beams", "0"], "--num_beams must be at least 1"),
        "negative length penalty": (["--length_penalty=-1"], "--length_penalty must be positive"),
    },
    "summarization": {
        "two names for the source column": (
            ["--text_column", "body", "--source_column", "text"],
            "--text_column and --source_column name the same column",
        ),
    },
    "token_classification": {
        "a label twice": (["--labels", "O", "O", "B-PER"], "more than once"),
        "unknown tag scheme": (["--tag_scheme", "BILUO"], "--tag_scheme BILUO"),
    },
}
TRAIN_MATRIX = [
    (task, name, flags, needle)
    for task in TASKS
    for name, (flags, needle) in {**TRAIN_CASES, **RECIPE_CASES.get(task, {})}.items()
    if (task, name) not in COVERED
]


@pytest.mark.parametrize("task, name, flags, needle", TRAIN_MATRIX, ids=[f"{t}: {n}" for t, n, _, _ in TRAIN_MATRIX])
def test_train(task, name, flags, needle, files, earlier_run, capsys):
    flags = [f.format(files=files, earlier=earlier_run) for f in flags]
    if "--output_dir" not in flags:  # point it at the earlier run, with permission to replace it
        flags = ["--output_dir", str(earlier_run), *([] if "--resume" in flags else ["--overwrite"]), *flags]
    before, before_files = snapshot(earlier_run), snapshot(files)
    code, err = run_cli(["train", task, *flags], capsys)
    assert_one_line_error(code, err, needle)
    assert err[0].count("error: ") == 1
    assert snapshot(earlier_run) == before and snapshot(files) == before_files


# ---- predict / generate / merge / push ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_bert_dir):
    """A classifier run, a causal LM run, a LoRA causal-LM run (adapter config only), a run without a tokenizer."""
    root = tmp_path_factory.mktemp("models")
    classifier = root / "classifier"
    shutil.copytree(tiny_bert_dir, classifier)
    (classifier / "results.json").write_text(json.dumps({"task": "sentiment", "models": []}))
    lm = tiny_gpt2(root / "lm")
    adapter = root / "lm-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(lm), "task_type": "CAUSAL_LM"})
    )
    no_tokenizer = root / "no-tokenizer"
    no_tokenizer.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(lm / name, no_tokenizer / name)
    image = root / "image"  # a tiny ViT classifier with its image processor
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    ViTForImageClassification(
        ViTConfig(
            image_size=16,
            patch_size=8,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=2,
        )
    ).save_pretrained(image)
    ViTImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(image)
    return {"classifier": classifier, "lm": lm, "adapter": adapter, "no-tokenizer": no_tokenizer, "image": image}


COMMAND_CASES = {
    # predict
    "predict: missing run dir": (["predict", "{files}/missing", "text"], "does not exist"),
    "predict: dir without a model": (["predict", "{files}/empty", "text"], "holds no saved model"),
    "predict: a causal LM": (["predict", "{lm}", "text"], "use `finetune generate"),
    "predict: a causal-LM adapter": (["predict", "{adapter}", "text"], "use `finetune generate"),
    "predict: image file missing": (["predict", "{image}", "{files}/missing.png"], "does not exist"),
    "predict: unreadable image": (["predict", "{image}", "{files}/text.png"], "is not a readable image"),
    # generate
    "generate: missing run dir": (["generate", "{files}/missing", "Once"], "does not exist"),
    "generate: dir without a model": (["generate", "{files}/empty", "Once"], "holds no saved model"),
    "generate: a classifier": (["generate", "{classifier}", "Once"], "not a causal LM"),
    "generate: no tokenizer": (["generate", "{no-tokenizer}", "Once"], "holds no tokenizer"),
    "generate: zero new tokens": (
        ["generate", "{lm}", "Once", "--max_new_tokens", "0"],
        "--max_new_tokens must be at least 1",
    ),
    "generate: zero temperature": (
        ["generate", "{lm}", "Once", "--do_sample", "--temperature", "0"],
        "--temperature must be positive",
    ),
    "generate: prompt past the context": (
        ["generate", "{lm}", "word " * 200, "--max_new_tokens", "10"],
        "exceeds the model's",
    ),
    # merge (missing / no adapter / moved base: tests/test_lora.py)
    "merge: output is the run dir": (["merge", "{adapter}", "--output", "{adapter}"], "--output must differ"),
    # push (before any network: the run folder itself)
    "push: missing run dir": (["push", "{files}/missing", "--repo_id", "someone/x"], "does not exist"),
    "push: not a finished run": (["push", "{lm}", "--repo_id", "someone/x"], "results.json is missing"),
    "push: adapter of a full fine-tune": (
        ["push", "{classifier}", "--repo_id", "someone/x", "--what", "adapter"],
        "no LoRA adapter",
    ),
}


@pytest.mark.parametrize("name", list(COMMAND_CASES))
def test_commands(name, files, models, capsys):
    argv, needle = COMMAND_CASES[name]
    argv = [a.format(files=files, **models) for a in argv]
    before = {key: snapshot(path) for key, path in models.items()}
    code, err = run_cli(argv, capsys)
    assert_one_line_error(code, err, needle)
    assert {key: snapshot(path) for key, path in models.items()} == before


@pytest.mark.parametrize(
    "argv",
    [
        ["predict"],
        ["generate"],
        ["merge"],
        ["push", "somewhere"],
        ["figures", "--nope"],
        ["predict", "--bogus", "x", "y"],
    ],
)
def test_argument_mistakes_of_every_command_are_one_line(argv):
    """A missing or unknown argument: one `error:` line naming the command and --help, exit 2, no usage dump.

    In a fresh process: in-process, the first logger configured under pytest's capture would keep its stream."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "finetune.cli", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"error: finetune {argv[0]}") and "--help" in err[0], err


@pytest.mark.parametrize(
    "recipe,alias",
    [
        ("sentiment", "tweets"),
        ("token_classification", "conll2003"),
        ("image_classification", "digits"),
        ("text_generation", "tweets"),
    ],
)
def test_a_packaged_alias_shadowed_by_a_local_folder_is_refused(recipe, alias, tmp_path, monkeypatch, capsys):
    # A folder named like a packaged corpus in the working directory: the user meant one of the two, so neither is
    # read silently; ./<name> picks the folder. Nothing is written.
    monkeypatch.chdir(tmp_path)
    (tmp_path / alias).mkdir()
    (tmp_path / alias / "train.csv").write_text("text,label\nhello,positive\n")
    before = snapshot(tmp_path)
    code, err = run_cli(["train", recipe, "--dataset", alias, "--output_dir", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, f"write ./{alias} for the local one")
    assert snapshot(tmp_path) == before and not (tmp_path / "run").exists()


@pytest.mark.parametrize("recipe,alias", [("sentiment", "tweets"), ("token_classification", "conll2003")])
def test_a_configuration_for_a_packaged_corpus_is_refused(recipe, alias, tmp_path, capsys):
    code, err = run_cli(
        ["train", recipe, "--dataset", alias, "--dataset_config", "mrpc", "--output_dir", str(tmp_path / "run")], capsys
    )
    assert_one_line_error(code, err, "drop --dataset_config mrpc")
    assert not (tmp_path / "run").exists()


def test_dot_slash_reads_the_local_folder_not_the_packaged_corpus(tmp_path, monkeypatch):
    from finetune.data.sources import load_any
    from finetune.data.text import PACKAGED_TEXT

    monkeypatch.chdir(tmp_path)
    (tmp_path / "tweets").mkdir()
    (tmp_path / "tweets" / "train.csv").write_text("text,label\nhello there,positive\nnot good,negative\n")
    data, provenance = load_any("./tweets", PACKAGED_TEXT)
    assert provenance.kind == "local" and provenance.note.startswith("local folder")
    assert data["train"]["text"] == ["hello there", "not good"]
