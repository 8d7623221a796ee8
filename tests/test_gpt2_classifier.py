"""GPT-2 as a classifier through the sentiment recipe (MODEL=gpt2): GPT-2 has no pad token, so the recipe pads
with EOS on the tokenizer AND tells the model (config.pad_token_id), whose pooling takes the last non-padding
token. A tiny GPT-2 built from config with the exact GPT-2 tokenizer stands in for the Hub's gpt2."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch
from tiny_models import tiny_gpt2

from recipes.sentiment import SentimentConfig, run

TEXTS = ["great", "the flight was delayed for four hours and nobody told us anything", "ok then"]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return tiny_gpt2(tmp_path_factory.mktemp("gpt2"), kind="cls")


def _config(tmp_path, model, dataset, **overrides):
    base = dict(
        output_dir=str(tmp_path / "run"),
        model=str(model),
        dataset=str(dataset),
        max_length=32,
        batch_size=16,
        eval_batch_size=64,
        max_train_samples=96,
        max_eval_samples=32,
        num_epochs=1,
        learning_rate=1e-3,
        compare=False,
        log_steps=2,
    )
    base.update(overrides)
    return SentimentConfig(**base)


def test_gpt2_classifier_pads_with_eos_and_pools_the_last_real_token(tmp_path, gpt2_dir, tweets_small_csv):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    config = _config(tmp_path, gpt2_dir, tweets_small_csv)
    results = run(config)
    assert results["models"][0]["steps"] == 6 and "accuracy" in results["models"][0]["test"]

    run_dir = Path(config.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    model = AutoModelForSequenceClassification.from_pretrained(run_dir).eval()
    eos = tokenizer.eos_token_id
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.pad_token_id == eos == model.config.pad_token_id == len(tokenizer) - 1  # GPT-2's last id

    # Last-token pooling honoured: right-padded batch == each text alone.
    assert tokenizer.padding_side == "right"
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    assert (batch["input_ids"] == eos).any()  # padding really happened
    with torch.no_grad():
        batched = model(**batch).logits
        alone = torch.cat([model(**tokenizer([t], return_tensors="pt")).logits for t in TEXTS])
        torch.testing.assert_close(batched, alone, rtol=0, atol=1e-5)
        # ...which would fail if the model pooled the last position (padding) instead: the check has teeth.
        hidden = model.transformer(**batch).last_hidden_state
        assert not torch.allclose(model.score(hidden[:, -1]), alone, atol=1e-3)


def test_gpt2_classifier_with_lora_saves_adapter_and_head(tmp_path, gpt2_dir, tweets_small_csv):
    from finetune.commands.predict import pipeline_for

    config = _config(tmp_path, gpt2_dir, tweets_small_csv, lora=True, lora_r=4, max_train_samples=32)
    run(config)
    run_dir = Path(config.output_dir)
    adapter = json.loads((run_dir / "adapter_config.json").read_text())
    assert adapter["target_modules"] == ["c_attn"] and "score" in adapter["modules_to_save"]
    assert adapter["base_model_name_or_path"] == str(Path(gpt2_dir).resolve())
    assert not (run_dir / "config.json").exists() and not (run_dir / "model.safetensors").exists()
    classify, _ = pipeline_for(run_dir)  # `finetune predict` on the adapter
    assert classify(TEXTS[1])[0]["label"] in ("negative", "positive")
