"""A sentinel token, given every way a user might give one by mistake, appears in no output and no file.

Every verb is called with the token as an unknown flag's value, as --token / --hub_token, as a stray value and as
a known flag's bad value; a whole training run has it in HF_TOKEN. The token must not show in stdout, stderr or
any byte of any file of the run directory.
"""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bad_inputs import run_cli  # noqa: E402
from tiny_models import tiny_gpt2  # noqa: E402

from finetune.core.errors import redact  # noqa: E402

SENTINEL = "hf_SentinelTokenDoNotLeak0123456789"
GIVEN_AS = {
    "unknown flag": ["--hub_tokn", SENTINEL],
    "unknown flag=value": [f"--api-token={SENTINEL}"],
    "--token": ["--token", SENTINEL],
    "--token=": [f"--token={SENTINEL}"],
    "--hub_token": ["--hub_token", SENTINEL],
    "stray value": [SENTINEL],
    "a known flag's bad value": ["--batch_size", SENTINEL],
}
VERBS = {
    "train sentiment": ["train", "sentiment", "--output_dir", "{tmp}/run"],
    "train text_generation": ["train", "text_generation", "--output_dir", "{tmp}/run"],
    "train image_classification": ["train", "image_classification", "--output_dir", "{tmp}/run"],
    "predict": ["predict", "{lm}", "a text"],
    "generate": ["generate", "{lm}", "Once"],
    "merge": ["merge", "{lm}"],
    "push": ["push", "{lm}", "--repo_id", "someone/x"],
    "figures": ["figures", "--run_dir", "{tmp}/none"],
}


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return tiny_gpt2(tmp_path_factory.mktemp("lm") / "lm")


@pytest.mark.parametrize("given", list(GIVEN_AS))
@pytest.mark.parametrize("verb", list(VERBS))
def test_no_verb_repeats_a_token(verb, given, tmp_path, lm, capsys):
    if verb == "generate" and given == "stray value":
        pytest.skip("a stray value is one more prompt: generate prints it back, as asked")
    argv = [a.format(tmp=tmp_path, lm=lm) for a in VERBS[verb]] + GIVEN_AS[given]
    if verb in ("push",) and given in ("--token", "--token="):
        argv += ["--hub_endpoint", "http://127.0.0.1:9"]  # push takes --token: nothing listens there
    capsys.readouterr()
    code, err_lines = run_cli(argv, capsys)
    captured = capsys.readouterr()
    assert code != 0, (verb, given)
    assert SENTINEL not in "\n".join([*err_lines, captured.out, captured.err]), (verb, given, err_lines)
    assert not list(tmp_path.rglob("*")) or SENTINEL.encode() not in b"".join(
        p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()
    )


def test_redact_covers_the_common_token_shapes():
    for secret in [
        SENTINEL,
        "ghp_abcdefghijklmnopqrstuvwxyz012345",
        "github_pat_11ABCDEFG0123456789_abcdefghij",
        "sk-proj-abcdefghijklmnopqrstuv",
        "AKIAIOSFODNN7EXAMPLE",
        "xoxb-1234567890-abcdefghij",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ]:
        assert secret not in redact(f"error: flag --x {secret}: fix it"), secret
    for text in ["token=abcdef123", "password: hunter2hunter", "api_key='zzzzzzzz'"]:
        assert "[redacted]" in redact(text), text
    # ... and leaves ordinary words alone
    for text in ["the tokenizer of 'hf_model' is missing", "max_new_tokens: 5", "runs/hf_run", "--token_budget 3"]:
        assert redact(text) == text


@pytest.mark.parametrize(
    "name, secret",
    [
        ("hub_token", True),
        ("HF_TOKEN", True),
        ("token", True),
        ("wandb.api_key", True),
        ("db_password", True),
        ("hubToken", True),
        ("api-key", True),
        ("apikey", True),
        ("tokens_column", False),
        ("max_new_tokens", False),
        ("tokenizer", False),
        ("pad_token", False),
        ("eos_token_id", False),
    ],
)
def test_a_secret_field_is_told_from_a_field_about_tokens(name, secret):
    """A field named for a secret keeps a run from being pushed; a tagger's tokens_column must not."""
    from finetune.core.secrets import is_secret_name

    assert is_secret_name(name) is secret


AGREED = [
    ("db_password", True),
    ("hf_token", True),
    ("hub_token", True),
    ("token", True),
    ("api_key", True),
    ("wandb_api_key", True),
    ("client_secret", True),
    ("tokens_column", False),
    ("max_new_tokens", False),
    ("pad_token", False),
]


@pytest.mark.parametrize("name,secret", AGREED)
def test_the_command_line_and_the_push_agree_on_what_is_a_secret(name, secret, tmp_path):
    """One vocabulary: a name the push refuses to publish is refused on the command line and in a config file,
    and a name the push lets through is not refused as a secret (before, --db_password reached the parser but
    blocked the push)."""
    from finetune.core.config import TrainingConfig, parse_config
    from finetune.core.errors import UserError
    from finetune.reporting.hub import select_files

    def refused_as_secret(call) -> bool:
        try:
            call()
        except UserError as err:
            return "not accepted by finetune train" in str(err)
        return False

    flag = lambda: parse_config(TrainingConfig, [f"--{name}", "x"])  # noqa: E731
    in_file = lambda: parse_config(TrainingConfig, [], values={name: "x"})  # noqa: E731
    assert refused_as_secret(flag) is secret
    assert refused_as_secret(in_file) is secret

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    (run_dir / "model.safetensors").write_bytes(b"weights")
    (run_dir / "results.json").write_text('{"models": []}')
    (run_dir / "config.yaml").write_text(f"output_dir: runs/x\n{name}: some-value\n")
    try:
        select_files(run_dir)
        pushed = True
    except UserError as err:
        assert "holds a secret" in str(err) and name in str(err)
        pushed = False
    assert pushed is not secret


def test_no_recipe_field_is_named_like_a_secret():
    """Every field of every task's config can be given on the command line, so none may be refused as a secret."""
    import dataclasses

    from finetune.core.secrets import is_secret_name
    from finetune.tasks import registry

    for task in registry.TASKS.values():
        names = [f.name for f in dataclasses.fields(task.config_cls)]
        assert not [n for n in names if is_secret_name(n)], task.name


def test_published_records_lose_local_paths_value_by_value():
    """What a push uploads for results.json / config.yaml: paths cut to their last part inside values only, YAML
    types kept, prose slashes, URLs and label names untouched."""
    import json

    import yaml

    from finetune.reporting.card import public_record

    config = public_record(
        "config.yaml",
        "output_dir: /home/me/runs/2024-06-01\ndataset: ~/data/001\n"
        "hub_endpoint: http://127.0.0.1:8000/x\nnote: PER / ORG\n",
    )
    assert yaml.safe_load(config) == {
        "output_dir": "2024-06-01",
        "dataset": "001",
        "hub_endpoint": "http://127.0.0.1:8000/x",
        "note": "PER / ORG",
    }
    results = json.loads(
        public_record(
            "results.json",
            json.dumps(
                {
                    "labels": ["/r/news", "x"],
                    "models": [{"source": "/tmp/a/tiny-bert"}],
                    "dataset_source": "CoNLL (PER / ORG)",
                }
            ),
        )
    )
    assert results == {
        "labels": ["/r/news", "x"],
        "models": [{"source": "tiny-bert"}],
        "dataset_source": "CoNLL (PER / ORG)",
    }


def test_a_whole_run_with_a_token_in_the_environment_writes_it_nowhere(
    tmp_path, tiny_bert_dir, tweets_small_csv, monkeypatch, capsys
):
    """HF_TOKEN set (as on any machine that pushes): not in the output, config.yaml, the card, the checkpoints..."""
    from recipes.sentiment import main

    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", SENTINEL)
    out = tmp_path / "run"
    code = main(
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
            "48",
            "--max_steps",
            "2",
            "--max_eval_samples",
            "32",
            "--mixed_precision",
            "no",
            "--log_with",
            "tensorboard",
            "--lora",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    assert SENTINEL not in captured.out + captured.err
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 10 and any(p.name.startswith("events.out") for p in files)  # the tracker's files too
    leaking = [str(p.relative_to(out)) for p in files if SENTINEL.encode() in p.read_bytes()]
    assert not leaking
    assert os.environ["HF_TOKEN"] == SENTINEL
