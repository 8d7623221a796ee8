"""The encoder-decoder recipes (issue 25): translation and summarization end to end on tiny models and a fixture
the tests write, checked against independent truths (sacrebleu and rouge_score on the written predictions,
the Auto classes on the saved run, an uninterrupted run for --resume, ONNX Runtime's greedy decoding).

The fixture is "copy with a twist": early-modern pronouns and verbs replaced by modern ones (thou -> you), which a
model can learn and a copy of the source almost solves, as KJV -> WEB.
"""

import json
import random
import subprocess
from pathlib import Path

import pytest

from finetune.core.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
WORDS = "thou shalt not kill steal bear false witness against thy neighbour the lord is my shepherd i want".split()
TWIST = {"thou": "you", "thy": "your", "shalt": "shall", "neighbour": "neighbor"}


def twisted_pairs(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        source = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))
        rows.append({"source": source, "target": " ".join(TWIST.get(w, w) for w in source.split())})
    return rows


@pytest.fixture(scope="session")
def pairs_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in twisted_pairs(240, 0)))
    return path


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory, minilm_dir):
    """A 2-layer, 32-wide T5 from config, with MiniLM's real tokenizer (pad 0 starts the decoder, [SEP] ends)."""
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    path = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    T5ForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def flags(out, model, dataset, *extra):
    return [
        "--output_dir",
        str(out),
        "--model",
        str(model),
        "--dataset",
        str(dataset),
        "--max_source_length",
        "16",
        "--max_target_length",
        "12",
        "--batch_size",
        "16",
        "--eval_batch_size",
        "32",
        "--max_steps",
        "4",
        "--eval_steps",
        "2",
        "--generate_eval_samples",
        "8",
        "--max_test_samples",
        "12",
        "--learning_rate",
        "1e-3",
        "--scratch_d_model",
        "32",
        "--scratch_layers",
        "2",
        "--mixed_precision",
        "no",
        *extra,
    ]


def run_cli(argv, capsys):
    from finetune import cli

    capsys.readouterr()
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:
        code = exit_info.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="session")
def translation_run(tmp_path_factory, tiny_bert_dir, pairs_jsonl):
    """One finished tiny BERT2BERT translation run with the scratch comparison, read by several tests."""
    from recipes.translation import main

    out = tmp_path_factory.mktemp("translation") / "run"
    assert main(flags(out, tiny_bert_dir, pairs_jsonl)) == 0
    return out


def read_jsonl(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


# ---- the run and its numbers -------------------------------------------------------------------------------------


def test_a_translation_run_reports_the_copy_baseline_both_models_and_their_predictions(translation_run):
    results = json.loads((translation_run / "results.json").read_text())
    assert results["task"] == "translation" and results["pipeline_tag"] == "translation"
    assert results["metric_for_best"] == "bleu" and results["greater_is_better"] is True
    assert [m["role"] for m in results["models"]] == ["pretrained", "scratch"]
    assert results["models"][0]["warm_started"] is True
    assert results["models"][1]["steps"] == results["models"][0]["steps"] == 4  # the same budget
    for entry in [results["copy_baseline"], *results["models"]]:
        assert set(entry["test"]) == {"bleu", "chrf", "gen_words"}
    assert "case:lc" in results["signature"]["bleu"]  # MiniLM: uncased
    for role in ("pretrained", "scratch"):
        rows = read_jsonl(translation_run / f"predictions_{role}.jsonl")
        assert len(rows) == 12 and set(rows[0]) == {"source", "reference", "output"}
    evals = [h["eval"] for h in results["models"][0]["history"] if "eval" in h]
    assert evals and all({"loss", "bleu", "chrf"} <= set(e) for e in evals)
    card = (translation_run / "README.md").read_text()  # the model-index holds the test BLEU and chrF
    assert "pipeline_tag: translation" in card and "- type: bleu" in card and "- type: chrf" in card


def test_the_scores_are_sacrebleus_on_the_written_predictions(translation_run):
    """Independent truth: sacrebleu itself, on predictions_*.jsonl and on the copy of the sources."""
    import sacrebleu

    results = json.loads((translation_run / "results.json").read_text())
    lowercase = results["generation"]["lowercase_scoring"]
    by_role = {m["role"]: m["test"] for m in results["models"]}
    for role in ("pretrained", "scratch"):
        rows = read_jsonl(translation_run / f"predictions_{role}.jsonl")
        outputs, references = [r["output"] for r in rows], [r["reference"] for r in rows]
        bleu = sacrebleu.BLEU(lowercase=lowercase).corpus_score(outputs, [references]).score
        chrf = sacrebleu.CHRF(lowercase=lowercase).corpus_score(outputs, [references]).score
        assert by_role[role]["bleu"] == pytest.approx(bleu, abs=1e-4)
        assert by_role[role]["chrf"] == pytest.approx(chrf, abs=1e-4)
        sources = [r["source"] for r in rows]
    copy = sacrebleu.BLEU(lowercase=lowercase).corpus_score(sources, [references]).score
    assert results["copy_baseline"]["test"]["bleu"] == pytest.approx(copy, abs=1e-4)


def test_the_alignment_figure_holds_one_target_by_source_map_per_model(translation_run):
    figure = json.loads((translation_run / "attention.json").read_text())
    assert (translation_run / "attention.png").stat().st_size > 1000
    assert len(figure["examples"]) == 3
    for example in figure["examples"]:
        assert set(example["maps"]) == {"pretrained", "scratch"}
        for attention in example["maps"].values():
            weights = attention["weights"]
            assert len(weights) == len(attention["target_tokens"]) and len(weights[0]) == len(
                attention["source_tokens"]
            )
            assert all(abs(sum(row) - 1) < 1e-2 for row in weights)  # a distribution over the source, per output


def test_the_auto_classes_load_the_run_and_decode_as_the_run_did(translation_run):
    """AutoModelForSeq2SeqLM + AutoTokenizer read the run directory (the scratch model's folder too), and transformers'
    own generate() writes what the run's batched, length-sorted generation wrote (greedy)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    import finetune.models.scratch  # noqa: F401  (registers the scratch model with the Auto classes)

    rows = read_jsonl(translation_run / "predictions_pretrained.jsonl")
    model = AutoModelForSeq2SeqLM.from_pretrained(translation_run).eval()
    tokenizer = AutoTokenizer.from_pretrained(translation_run)
    for row in rows[:4]:
        ids = model.generate(**tokenizer(row["source"], return_tensors="pt"), max_new_tokens=12)
        assert tokenizer.decode(ids[0], skip_special_tokens=True).strip() == row["output"]
    scratch = AutoModelForSeq2SeqLM.from_pretrained(translation_run / "scratch")
    assert type(scratch).__name__ == "ScratchTransformerForSeq2Seq"


def test_transformers_5_has_no_translation_pipeline_any_more():
    """Why no test calls pipeline("translation"): transformers 5 removed the translation, summarization and
    text2text-generation pipelines (README says so). Should they come back, this fails and a pipeline test is due."""
    from transformers.pipelines import check_task  # what pipeline(task, ...) calls first

    for task in ("translation", "summarization", "text2text-generation"):
        with pytest.raises(KeyError, match="has been removed"):
            check_task(task)


# ---- the verbs that read the run: predict, evaluate ---------------------------------------------------------------


def test_predict_writes_what_the_run_wrote_for_each_input(translation_run, tmp_path, capsys):
    rows = read_jsonl(translation_run / "predictions_pretrained.jsonl")[:3]
    code, out, err = run_cli(["predict", str(translation_run), *[r["source"] for r in rows]], capsys)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines == [{"input": r["source"], "output": r["output"]} for r in rows]
    inputs = tmp_path / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"source": r["source"]}) + "\n" for r in rows))
    code, out, err = run_cli(
        ["predict", str(translation_run / "scratch"), "--file", str(inputs), "--text_column", "source"], capsys
    )
    assert code == 0, err
    scratch = read_jsonl(translation_run / "predictions_scratch.jsonl")[:3]
    assert [json.loads(line) for line in out.splitlines()] == [
        {"id": i, "output": r["output"]} for i, r in enumerate(scratch)
    ]


def test_evaluate_repeats_the_test_numbers_and_scores_new_pairs(translation_run, tmp_path, capsys):
    results = json.loads((translation_run / "results.json").read_text())
    code, out, err = run_cli(["evaluate", str(translation_run), "--output", str(tmp_path / "own.json")], capsys)
    assert code == 0, err
    own = json.loads((tmp_path / "own.json").read_text())
    assert own["examples"] == 12
    for name in ("bleu", "chrf"):
        assert own["metrics"][name] == pytest.approx(results["models"][0]["test"][name], abs=1e-4)
    new = tmp_path / "new.jsonl"
    new.write_text("".join(json.dumps(row) + "\n" for row in twisted_pairs(30, 9)))
    code, out, err = run_cli(["evaluate", str(translation_run), "--dataset", str(new)], capsys)
    assert code == 0, err
    assert "30 examples" in out and "bleu" in out and "chrf" in out


def test_the_demo_writes_what_predict_writes_and_draws_the_cross_attention(translation_run):
    from finetune.commands.demo import build_app, write_text
    from finetune.tasks.runs import open_run

    rows = read_jsonl(translation_run / "predictions_pretrained.jsonl")
    run = open_run(translation_run, attentions=True)
    output, heatmap = write_text(run, rows[0]["source"])
    assert output == rows[0]["output"]
    assert heatmap.ndim == 3 and heatmap.shape[2] == 3
    assert write_text(run, "  ") == ("", None)
    assert build_app(translation_run) is not None  # the gradio page builds (source box, outputs, heatmaps)


@pytest.mark.slow
def test_onnx_greedy_decoding_writes_what_pytorch_wrote(translation_run, tmp_path, capsys):
    """encoder.onnx + decoder.onnx, decoded greedily through ONNX Runtime by the test itself, reproduce the run's own
    PyTorch outputs (predictions_pretrained.jsonl)."""
    from transformers import AutoTokenizer

    from finetune.commands.export import onnx_greedy, session

    out = tmp_path / "onnx"
    code, stdout, err = run_cli(["export", str(translation_run), "--format", "onnx", "--output", str(out)], capsys)
    assert code == 0, err
    info = json.loads((out / "export.json").read_text())
    assert set(info["graphs"]) == {"encoder.onnx", "decoder.onnx"} and info["verification"]["greedy_tokens_equal"] == 8
    rows = read_jsonl(translation_run / "predictions_pretrained.jsonl")[:6]
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer([r["source"] for r in rows], padding=True, return_tensors="np")
    decoding = info["decoding"]
    ids = onnx_greedy(
        session(out / "encoder.onnx"),
        session(out / "decoder.onnx"),
        batch["input_ids"],
        batch["attention_mask"],
        decoding["decoder_start_token_id"],
        decoding["eos_token_id"],
        decoding["pad_token_id"],
        decoding["max_new_tokens"],
    )
    written = [t.strip() for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]
    assert written == [r["output"] for r in rows]


# ---- other models, summarization, bad input ---------------------------------------------------------------------


def test_a_t5_summarization_run_warns_once_without_a_prefix_and_scores_rouge(
    tmp_path, tiny_t5_dir, pairs_jsonl, capsys
):
    from rouge_score import rouge_scorer

    out = tmp_path / "run"
    code, stdout, err = run_cli(
        ["train", "summarization", *flags(out, tiny_t5_dir, pairs_jsonl, "--compare", "false", "--max_steps", "2")]
        + ["--lora", "--lora_target_modules", "q", "v"]
        + ["--source_column", "source", "--target_column", "target", "--max_source_length", "6"],
        capsys,
    )
    assert code == 0, err
    assert (stdout + err).count("is a T5 model, trained with a task prefix") == 1
    assert "sources longer than --max_source_length 6" in stdout  # never cut silently
    results = json.loads((out / "results.json").read_text())
    assert results["metric_for_best"] == "rougeL"
    rows = read_jsonl(out / "predictions_pretrained.jsonl")
    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    scores = [scorer.score(r["reference"], r["output"]) for r in rows]
    for name in ("rouge1", "rougeL"):
        expected = sum(s[name].fmeasure for s in scores) / len(scores)
        assert results["models"][0]["test"][name] == pytest.approx(expected, abs=1e-4)
    # A LoRA adapter (SEQ_2_SEQ_LM) reloads onto its base for the verbs, and writes what the run wrote.
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    code, stdout, err = run_cli(["predict", str(out), rows[0]["source"]], capsys)
    assert code == 0, err
    assert json.loads(stdout.splitlines()[-1])["output"] == rows[0]["output"]


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--num_beams", "0"], "--num_beams must be at least 1"),
        (["--max_source_length", "1"], "--max_source_length must be at least 2"),
        (["--model", "{gpt2}"], "neither an encoder-decoder"),
        (["--lora"], "its cross-attention is new and must be trained in full"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(extra, needle, tmp_path, tiny_bert_dir, pairs_jsonl, capsys):
    from tiny_models import tiny_gpt2

    if "{gpt2}" in extra:
        extra = [str(tiny_gpt2(tmp_path / "gpt2")) if e == "{gpt2}" else e for e in extra]
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "translation", *flags(out, tiny_bert_dir, pairs_jsonl), *extra], capsys)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_decoder_from_another_checkpoint_is_said_and_the_new_weights_counted(tiny_bert_dir, tiny_tagger_dir):
    from finetune.models.seq2seq import load_seq2seq

    loaded = load_seq2seq(str(tiny_bert_dir), decoder_model=str(tiny_tagger_dir))
    assert loaded.warm_started and type(loaded.model).__name__ == "EncoderDecoderModel"
    note = loaded.notes[0]
    assert f"encoder = {tiny_bert_dir.name}" in note and f"decoder = {tiny_tagger_dir.name}" in note
    crossattention = [n for n, _ in loaded.model.decoder.named_parameters() if "crossattention" in n]
    assert f"new, randomly initialised: {len(crossattention)} cross-attention tensors" in note
    assert loaded.model.generation_config.decoder_start_token_id == loaded.tokenizer.cls_token_id


def test_a_forced_bos_token_must_be_a_token(tiny_bert_dir):
    from finetune.models.seq2seq import load_seq2seq

    with pytest.raises(UserError, match="--forced_bos_token"):
        load_seq2seq(str(tiny_bert_dir), forced_bos_token="xx_XX_not_a_token")


# ---- the scratch encoder-decoder as a Hugging Face generator ----------------------------------------------------


def test_the_scratch_model_generates_as_its_own_greedy_decoder():
    """generate() (encoder run once, through get_encoder) writes the tokens greedy_decode writes step by step."""
    import torch

    from finetune.models.scratch import ScratchTransformerConfig, ScratchTransformerForSeq2Seq

    torch.manual_seed(0)
    config = ScratchTransformerConfig(
        vocab_size=30, d_model=32, n_heads=2, n_layers=2, n_decoder_layers=2, d_ff=64, pad_token_id=0,
        decoder_start_token_id=1, eos_token_id=2,
    )  # fmt: skip
    model = ScratchTransformerForSeq2Seq(config).eval()
    source = torch.randint(3, 30, (4, 7))
    mask = torch.ones_like(source)
    mask[1, 5:] = 0
    expected = model.greedy_decode(source, mask, max_new_tokens=8)
    got = model.generate(input_ids=source, attention_mask=mask, max_new_tokens=8, do_sample=False)
    assert torch.equal(got[:, : expected.shape[1]], expected)
    out = model(input_ids=source, attention_mask=mask, decoder_input_ids=got, output_attentions=True)
    assert out.cross_attentions[-1].shape == (4, 2, got.shape[1], 7)
    assert torch.allclose(out.cross_attentions[-1][1, :, :, 5:], torch.tensor(0.0))  # padding is never read


# ---- the engine's features: resume, two processes, warm start vs scratch -----------------------------------------


def test_an_interrupted_run_resumes_to_the_weights_of_a_straight_one(tmp_path, tiny_bert_dir, pairs_jsonl, capsys):
    from safetensors.torch import load_file

    base = ["train", "translation", "--compare", "false", "--checkpoint_steps", "1", "--generate_eval_samples", "0"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert run_cli([*base, *flags(straight, tiny_bert_dir, pairs_jsonl)], capsys)[0] == 0
    argv = [*base, *flags(stopped, tiny_bert_dir, pairs_jsonl)]
    assert run_cli([*argv, "--stop_after_steps", "2"], capsys)[0] == 130
    assert run_cli([*argv, "--resume"], capsys)[0] == 0
    a, b = load_file(straight / "model.safetensors"), load_file(stopped / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert read_jsonl(straight / "predictions_pretrained.jsonl") == read_jsonl(stopped / "predictions_pretrained.jsonl")


@pytest.mark.slow
def test_two_processes_train_and_only_the_main_one_writes(tmp_path, tiny_bert_dir, pairs_jsonl):
    from test_multiprocess import ENV, LAUNCH, free_port

    out = tmp_path / "two"
    cmd = [*LAUNCH, "--main_process_port", str(free_port()), "-m", "recipes.translation"]
    proc = subprocess.run(
        [*cmd, *flags(out, tiny_bert_dir, pairs_jsonl, "--batch_size", "8")],
        env=ENV,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1
    results = json.loads((out / "results.json").read_text())
    assert [m["steps"] for m in results["models"]] == [4, 4]
    assert len(read_jsonl(out / "predictions_scratch.jsonl")) == 12


@pytest.mark.slow
def test_warm_starting_from_minilm_beats_the_scratch_model_with_the_same_budget(tmp_path, minilm_dir, pairs_jsonl):
    """The point of BERT2BERT: MiniLM's pretrained encoder and decoder learn the fixture faster than the same budget
    buys the scratch encoder-decoder (validation loss per target token after 5 steps of 8)."""
    from recipes.translation import main

    out = tmp_path / "run"
    argv = flags(out, "minilm", pairs_jsonl, "--max_steps", "5", "--eval_steps", "5", "--generate_eval_samples", "0")
    assert main(argv + ["--batch_size", "8", "--max_test_samples", "4", "--learning_rate", "1e-4"]) == 0
    results = json.loads((out / "results.json").read_text())
    loss = {m["role"]: [h["eval"]["loss"] for h in m["history"] if "eval" in h][-1] for m in results["models"]}
    assert loss["pretrained"] < loss["scratch"] - 1.0, loss


def test_the_registry_knows_both_tasks():
    from finetune.tasks import registry

    assert registry.get("translation").pipeline_tag == "translation"
    assert registry.get("summarization").metric == "rougeL"
    assert registry.get("summarization").config_cls().dataset == "conll-headlines"
