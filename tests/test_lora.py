"""LoRA: target modules per architecture, trainable-parameter counts, adapter save/reload and merge equality,
offline reloading from the base model's local folder, and the bad inputs of `finetune merge`."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest
import torch
from tiny_models import tiny_gpt2

from finetune.commands import merge as merge_command
from finetune.core.errors import UserError
from finetune.models import lora


@dataclass
class LoraSettings:  # the LoRA fields of TrainingConfig, nothing else
    lora_r: int = 4
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    lora_target_modules: Optional[list] = field(default=None)


@pytest.fixture(scope="module")
def gpt2_cls_dir(tmp_path_factory):
    return tiny_gpt2(tmp_path_factory.mktemp("gpt2-cls"), kind="cls", num_labels=3)


@pytest.fixture(scope="module")
def gpt2_lm_dir(tmp_path_factory):
    return tiny_gpt2(tmp_path_factory.mktemp("gpt2-lm"), kind="lm")


def _perturb(model, seed=0):
    """LoRA's B starts at zero (the adapter is then a no-op): give every trainable tensor random values, so
    that equality after reloading or merging means something."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)


def _tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    return BertForSequenceClassification(
        BertConfig(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            num_labels=2,
        )
    )


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            intermediate_size=64,
        )
    )


def test_target_modules_per_architecture(gpt2_cls_dir):
    from transformers import AutoModelForSequenceClassification

    gpt2 = AutoModelForSequenceClassification.from_pretrained(gpt2_cls_dir)
    assert lora.lora_target_modules(gpt2) == ["c_attn"]
    assert lora.lora_target_modules(_tiny_bert()) == ["query", "value"]
    assert lora.lora_target_modules(_tiny_llama()) == ["q_proj", "v_proj"]
    with pytest.raises(UserError, match="--lora_target_modules"):
        lora.lora_target_modules(torch.nn.Sequential(torch.nn.Linear(2, 2)))


def test_trainable_parameter_counts(gpt2_cls_dir):
    from transformers import AutoModelForSequenceClassification

    # GPT-2: c_attn maps 32 -> 96 in each of 2 layers; A is r x 32, B is 96 x r. The score head (32 -> 3, no
    # bias) is new, so it trains in full.
    gpt2 = lora.apply_lora(AutoModelForSequenceClassification.from_pretrained(gpt2_cls_dir), LoraSettings(), "SEQ_CLS")
    trainable = {n: p.numel() for n, p in gpt2.named_parameters() if p.requires_grad}
    assert sum(v for n, v in trainable.items() if "lora_" in n) == 2 * 4 * (32 + 96)
    assert sum(v for n, v in trainable.items() if "score" in n) == 32 * 3
    assert sum(trainable.values()) == 2 * 4 * (32 + 96) + 32 * 3
    assert gpt2.peft_config["default"].fan_in_fan_out  # GPT-2's Conv1D stores W transposed

    # BERT: query and value (32 -> 32) in 2 layers, plus the classifier (32 x 2 + 2).
    bert = lora.apply_lora(_tiny_bert(), LoraSettings(lora_r=2), "SEQ_CLS")
    assert sum(p.numel() for p in bert.parameters() if p.requires_grad) == 2 * 2 * 2 * (32 + 32) + 32 * 2 + 2
    # Llama: q_proj and v_proj (32 -> 32 each: 2 KV heads of 16 here) in 2 layers; no head is new.
    llama = lora.apply_lora(_tiny_llama(), LoraSettings(lora_r=2, lora_target_modules=None), "CAUSAL_LM")
    assert sum(p.numel() for p in llama.parameters() if p.requires_grad) == 2 * 2 * 2 * (32 + 32)
    with pytest.raises(UserError, match="no such module"):
        lora.apply_lora(_tiny_llama(), LoraSettings(lora_target_modules=["query"]), "CAUSAL_LM")


def _save_classifier_run(model_dir, run_dir, labels):
    """What a --lora sentiment run leaves: adapter (+ head), tokenizer with its pad token, results.json."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    base = AutoModelForSequenceClassification.from_pretrained(
        model_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={l: i for i, l in enumerate(labels)},
        pad_token_id=tokenizer.pad_token_id,
    )
    model = lora.apply_lora(base, LoraSettings(), "SEQ_CLS", base_path=str(model_dir))
    _perturb(model)
    model.eval()
    model.save_pretrained(run_dir)
    tokenizer.save_pretrained(run_dir)
    (Path(run_dir) / "results.json").write_text(json.dumps({"labels": labels}))
    return model, tokenizer


def test_adapter_reloads_offline_with_its_head_and_merges(gpt2_cls_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    run_dir = tmp_path / "run"
    labels = ["negative", "neutral", "positive"]
    model, tokenizer = _save_classifier_run(gpt2_cls_dir, run_dir, labels)
    adapter_config = json.loads((run_dir / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == str(Path(gpt2_cls_dir).resolve())  # a local folder
    assert "score" in adapter_config["modules_to_save"]
    assert not (run_dir / "config.json").exists()  # else transformers would take the folder for a full model

    batch = tokenizer(["what a lovely flight", "lost my bag again, thanks"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**batch).logits

    reloaded, base_path = lora.load_adapter_run(run_dir)
    assert base_path == str(Path(gpt2_cls_dir).resolve())
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, expected, rtol=0, atol=1e-6)

    assert merge_command.main([str(run_dir)]) == 0
    merged = AutoModelForSequenceClassification.from_pretrained(run_dir / "merged")  # plain transformers
    merged.eval()
    assert merged.config.id2label == dict(enumerate(labels))
    assert not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, expected, rtol=0, atol=1e-5)

    from finetune.commands.predict import pipeline_for  # `finetune predict` on the adapter run directory

    classify, task = pipeline_for(run_dir)
    assert task == "text-classification" and classify("what a lovely flight")[0]["label"] in labels


def test_causal_lm_adapter_merge_and_custom_output(gpt2_lm_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(gpt2_lm_dir)
    model = lora.apply_lora(base, LoraSettings(lora_r=2), "CAUSAL_LM", base_path=str(gpt2_lm_dir))
    _perturb(model, seed=1)
    model.eval()
    run_dir = tmp_path / "run"
    model.save_pretrained(run_dir)
    tokenizer = AutoTokenizer.from_pretrained(gpt2_lm_dir)
    tokenizer.save_pretrained(run_dir)
    ids = tokenizer("The dog is a", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    out = merge_command.merge(run_dir, tmp_path / "elsewhere")
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, expected, rtol=0, atol=1e-5)
    assert (out / "tokenizer_config.json").is_file()


def test_merge_bad_inputs(tmp_path, gpt2_lm_dir, capsys):
    cases = [
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(gpt2_lm_dir)], "no LoRA adapter"),
    ]
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "adapter_config.json").write_text(
        json.dumps({"base_model_name_or_path": str(tmp_path / "gone"), "task_type": "CAUSAL_LM"})
    )
    cases.append(([str(moved)], "does not exist (moved or cache cleared?)"))
    for argv, needle in cases:
        with pytest.raises(SystemExit) as info:
            merge_command.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not (moved / "merged").exists()


def test_adapter_run_on_a_base_whose_head_has_another_size(tmp_path, minilm_dir, tweets_small_csv):
    """A base with its own 5-class head, fine-tuned with LoRA for 2 labels: the run still reloads (the base's
    head is replaced by the adapter's saved one, so the size mismatch is expected)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from recipes.sentiment import main

    base = tmp_path / "base-5-classes"
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=5,
    )
    BertForSequenceClassification(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    run = tmp_path / "run"
    assert (
        main(
            [
                "--output_dir",
                str(run),
                "--model",
                str(base),
                "--dataset",
                str(tweets_small_csv),
                "--lora",
                "--max_train_samples",
                "32",
                "--max_eval_samples",
                "16",
                "--max_length",
                "16",
                "--batch_size",
                "16",
                "--compare",
                "false",
            ]
        )
        == 0
    )
    model, _ = lora.load_adapter_run(run)
    assert model.config.num_labels == 2
    with torch.no_grad():
        logits = model(**tokenizer(["good flight"], return_tensors="pt")).logits
    assert logits.shape == (1, 2)
