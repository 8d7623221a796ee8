"""Extractive question answering end to end (recipes/question_answering.py), on fixtures written here
(tests/qa_fixtures.py): SQuAD-shaped jsonl and SQuAD's nested JSON, v1 and v2, contexts longer than one window.

One session run (`qa_run`) is read by several tests: the "pretrained" model is a one-block slice of the packaged
MiniLM (its real embeddings and first transformer block: pretrained weights, six times cheaper than the whole
model), the scratch model a 2-block, 64-wide teaching transformer, same windows, same steps. The truths: the squad
metric module applied to predictions.json, transformers' own span decoding, ONNX Runtime. Then the shared engine
features with a tiny BERT: an exact resume, two processes, a push through the loopback Hub.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_server import USER, WRITE_TOKEN, FakeHub  # noqa: E402
from qa_fixtures import write_jsonl_folder, write_nested_folder  # noqa: E402
from test_multiprocess import ENV, LAUNCH, free_port  # noqa: E402

from finetune.core.metrics import load_metric  # noqa: E402
from recipes.question_answering import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WINDOWS = ["--max_length", "64", "--doc_stride", "16", "--max_answer_length", "10"]


def run_main(argv, command=main):
    try:
        return command([str(a) for a in argv])
    except SystemExit as exit_info:
        return exit_info.code


@pytest.fixture(scope="session")
def minilm_slice(tmp_path_factory, minilm_dir):
    from transformers import AutoModel, AutoTokenizer

    path = tmp_path_factory.mktemp("minilm-1-block")  # a BertModel, as MiniLM ships: the span head is new in the run
    AutoModel.from_pretrained(minilm_dir, num_hidden_layers=1).save_pretrained(path)
    AutoTokenizer.from_pretrained(minilm_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_qa_bert(tmp_path_factory, minilm_dir):
    """A 2-layer, 32-wide BERT with a span head and MiniLM's tokenizer (as conftest's tiny_bert_dir)."""
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    path = tmp_path_factory.mktemp("tiny-qa-bert")
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)  # fmt: skip
    BertForQuestionAnswering(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def qa_v1_folder(tmp_path_factory):
    return write_jsonl_folder(tmp_path_factory.mktemp("qa-v1"))


@pytest.fixture(scope="session")
def qa_run(tmp_path_factory, minilm_slice, qa_v1_folder):
    out = tmp_path_factory.mktemp("qa-run") / "run"
    argv = ["--output_dir", out, "--model", minilm_slice, "--dataset", qa_v1_folder, *WINDOWS, "--batch_size", "16",
            "--num_epochs", "2", "--learning_rate", "5e-4", "--eval_steps", "1000", "--scratch_layers", "2",
            "--scratch_d_model", "64", "--scratch_learning_rate", "1e-3", "--mixed_precision", "no",
            "--keep_checkpoints", "none"]  # fmt: skip
    from contextlib import redirect_stdout
    from io import StringIO

    printed = StringIO()
    with redirect_stdout(printed):
        assert run_main(argv) == 0
    return out, printed.getvalue()


def references(folder, split="test"):
    rows = [json.loads(line) for line in (Path(folder) / f"{split}.jsonl").read_text().splitlines()]
    return rows


def squad_of(predictions: dict, rows, no_answer=None):
    """The squad (v1) or squad_v2 metric on a predictions.json, against the fixture's own answers."""
    refs = [{"id": r["id"], "answers": r["answers"]} for r in rows]
    if no_answer is None:
        preds = [{"id": r["id"], "prediction_text": predictions[r["id"]]} for r in rows]
        return load_metric("squad").compute(predictions=preds, references=refs)
    preds = [
        {"id": r["id"], "prediction_text": predictions[r["id"]], "no_answer_probability": no_answer[r["id"]]}
        for r in rows
    ]
    return load_metric("squad_v2").compute(predictions=preds, references=refs)


@pytest.mark.slow
def test_pretrained_beats_scratch_and_results_are_the_squad_metric_of_predictions_json(qa_run, qa_v1_folder):
    out, printed = qa_run
    results = json.loads((out / "results.json").read_text())
    pretrained, scratch = results["models"]
    assert results["version_2"] is False and results["metric"] == "squad" and results["metric_for_best"] == "f1"
    assert results["pipeline_tag"] == "question-answering"
    assert pretrained["test"]["f1"] > scratch["test"]["f1"] + 15, (pretrained["test"], scratch["test"])
    # the recipe's numbers are the squad metric of the predictions it wrote, for both models
    rows = references(qa_v1_folder)
    for model, folder in ((pretrained, out), (scratch, out / "scratch")):
        predictions = json.loads((folder / "predictions.json").read_text())
        assert set(predictions) == {r["id"] for r in rows}
        again = squad_of(predictions, rows)
        assert again == pytest.approx(model["test"], abs=1e-4)
        nbest = json.loads((folder / "nbest_predictions.json").read_text())
        assert all(nbest[i][0]["text"] == predictions[i] for i in predictions)
        assert all(abs(sum(c["probability"] for c in nbest[i]) - 1) < 1e-6 for i in nbest)
    # what the run said: the new weights, the windows (contexts longer than one window), the side-by-side table
    assert "new (randomly initialised) weights of BertForQuestionAnswering: qa_outputs.bias, qa_outputs.weight" in (
        printed
    )
    assert "hold their answer, the others learn the [CLS] position" in printed
    assert results["windows"]["test"] > len(rows)  # some test contexts span two windows
    assert "scratch-transformer" in printed and (out / "learning_curves.png").is_file()


@pytest.mark.slow
def test_our_answers_agree_with_the_span_decoding_transformers_ships(qa_run, qa_v1_folder):
    """transformers 5 removed the question-answering pipeline (pipeline("question-answering") raises a KeyError
    pointing to chat models), but still ships its span decoding, select_starts_ends (kept for document QA): the
    truth here, on the saved model's own logits. It normalises start/end scores per window before comparing
    windows; we compare raw logit sums (run_qa's rule). On a context of one window both rules pick the same span;
    across windows, the pipeline rule's pick must be among our n-best."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer
    from transformers.pipelines import pipeline
    from transformers.pipelines.document_question_answering import select_starts_ends

    out, _ = qa_run
    with pytest.raises(KeyError, match="question-answering has been removed"):
        pipeline("question-answering", model=str(out))
    model = AutoModelForQuestionAnswering.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    predictions = json.loads((out / "predictions.json").read_text())
    nbest = json.loads((out / "nbest_predictions.json").read_text())
    one_window = 0
    for row in references(qa_v1_folder):
        enc = tokenizer(row["question"], row["context"], truncation="only_second", max_length=64, stride=16,
                        return_overflowing_tokens=True, return_offsets_mapping=True, padding=True,
                        return_tensors="pt")  # fmt: skip
        with torch.no_grad():
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                           token_type_ids=enc["token_type_ids"])  # fmt: skip
        best = []
        for w in range(len(enc["input_ids"])):
            p_mask = np.array([s != 1 for s in enc.sequence_ids(w)])
            starts, ends, scores, _ = select_starts_ends(
                logits.start_logits[w : w + 1].numpy(), logits.end_logits[w : w + 1].numpy(), p_mask,
                enc["attention_mask"][w : w + 1].numpy(), max_answer_len=10,
            )  # fmt: skip
            offsets = enc["offset_mapping"][w]
            best.append((scores[0], row["context"][offsets[starts[0]][0] : offsets[ends[0]][1]]))
        answer = max(best)[1]
        if len(best) == 1:
            one_window += 1
            assert answer == predictions[row["id"]], row
        else:
            assert answer in [c["text"] for c in nbest[row["id"]]], row
    assert one_window >= 10


@pytest.mark.slow
def test_evaluate_and_predict_read_the_run(qa_run, qa_v1_folder, tmp_path, capsys):
    from finetune.commands.evaluate import evaluate_run
    from finetune.commands.predict import main as predict_main
    from finetune.tasks.runs import open_run

    predict = lambda argv: run_main(argv, predict_main)
    out, _ = qa_run
    results = json.loads((out / "results.json").read_text())
    report = evaluate_run(open_run(out), progress=False)  # the run's own test split: its numbers again
    assert report["metrics"] == pytest.approx(results["models"][0]["test"], abs=1e-4)
    new = tmp_path / "dev.jsonl"  # new data: every row scored
    new.write_text("".join(json.dumps(r) + "\n" for r in references(qa_v1_folder)[:7]))
    report = evaluate_run(open_run(out / "scratch"), dataset=str(new), progress=False)
    assert report["examples"] == 7 and set(report["metrics"]) == {"exact_match", "f1"}

    row = references(qa_v1_folder)[0]
    assert predict([str(out), "--question", row["question"], "--context", row["context"]]) == 0
    line = json.loads(capsys.readouterr().out)
    assert row["context"][line["start"] : line["end"]] == line["answer"] and 0 < line["score"] <= 1
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps({"id": r["id"], "q": r["question"], "context": r["context"]}) + "\n"
                                 for r in references(qa_v1_folder)[:5]))  # fmt: skip
    written = tmp_path / "answers.jsonl"
    assert predict([str(out), "--file", str(questions), "--question_column", "q", "--output", str(written)]) == 0
    lines = [json.loads(x) for x in written.read_text().splitlines()]
    predictions = json.loads((out / "predictions.json").read_text())
    assert [x["answer"] for x in lines] == [predictions[x["id"]] for x in lines]  # as the evaluation answered
    assert set(lines[0]) == {"id", "answer", "score", "start", "end"}
    # bad input: one line, exit 2, nothing written
    capsys.readouterr()
    assert predict([str(out), "--file", str(questions), "--output", str(tmp_path / "no.jsonl")]) == 2
    assert "has no 'question' field: pass --question_column NAME" in capsys.readouterr().err
    assert not (tmp_path / "no.jsonl").exists()
    assert predict([str(out), "what is this?"]) == 2
    assert "answers questions: pass --question QUESTION --context TEXT" in capsys.readouterr().err


@pytest.mark.slow
def test_the_demo_highlights_the_answer_and_draws_the_question_to_context_attention(qa_run, qa_v1_folder):
    from finetune.commands.demo import answer_question
    from finetune.tasks.runs import open_run

    out, _ = qa_run
    predictions = json.loads((out / "predictions.json").read_text())
    row = references(qa_v1_folder)[1]
    for folder in (out, out / "scratch"):
        run = open_run(folder, attentions=True)
        pieces, summary, figure = answer_question(run, row["question"], row["context"])
        assert "".join(text for text, _ in pieces) == row["context"]  # the whole context, the answer marked in it
        marked = [text for text, label in pieces if label == "answer"]
        if folder == out:
            assert marked == [predictions[row["id"]]] and repr(marked[0]) in summary
        assert figure is not None and figure.ndim == 3 and figure.shape[2] == 3


@pytest.mark.slow
def test_onnx_export_gives_start_and_end_logits_within_1e_4(qa_run, tmp_path):
    from finetune.commands.export import export

    out, _ = qa_run
    info = export(out / "scratch", tmp_path / "onnx", progress=lambda line: None)
    assert info["outputs"] == ["start_logits", "end_logits"]
    assert info["verification"]["max_abs_difference"] < 1e-4 and info["verification"]["examples"] >= 16
    assert (tmp_path / "onnx" / "model.onnx").is_file()


@pytest.mark.slow
def test_nested_squad_v2_is_detected_scored_with_squad_v2_and_trains_with_lora(tmp_path, tiny_qa_bert, capsys):
    from finetune.commands.evaluate import evaluate_run
    from finetune.tasks.runs import open_run

    folder = write_nested_folder(tmp_path / "squad2", version="v2.0", train=30, test=8, unanswerable=0.4)
    out = tmp_path / "run"
    argv = ["--output_dir", out, "--model", tiny_qa_bert, "--dataset", folder, *WINDOWS, "--batch_size", "16",
            "--max_steps", "6", "--learning_rate", "3e-3", "--compare", "false", "--lora", "--lora_r", "4",
            "--mixed_precision", "no"]  # fmt: skip
    assert run_main(argv) == 0
    printed = capsys.readouterr().out
    assert "SQuAD 2.0 style" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["version_2"] is True and results["metric"] == "squad_v2"
    test = results["models"][0]["test"]
    assert {"exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh"} <= set(test)
    # the no-answer probabilities are the model's own, and the squad_v2 metric of the files gives the same numbers
    no_answer = json.loads((out / "no_answer_probability.json").read_text())
    assert len(set(no_answer.values())) > 1 and all(0 < p < 1 for p in no_answer.values())
    predictions = json.loads((out / "predictions.json").read_text())
    data = json.loads((folder / "dev-v2.0.json").read_text())["data"][0]["paragraphs"]
    rows = [{"id": q["id"], "answers": {"text": [a["text"] for a in q["answers"]],
             "answer_start": [a["answer_start"] for a in q["answers"]]}} for p in data for q in p["qas"]]  # fmt: skip
    assert squad_of(predictions, rows, no_answer) == pytest.approx({k: v for k, v in test.items()}, abs=1e-4)
    assert (out / "adapter_config.json").is_file()  # LoRA: the adapter with the span head (modules_to_save)
    report = evaluate_run(open_run(out), progress=False)
    assert report["metrics"] == pytest.approx(test, abs=1e-4)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max_length", "12"], "is 10 tokens long and leaves no room for its context in --max_length 12"),
        (["--max_length", "24", "--doc_stride", "13"], "--doc_stride 13 is not smaller than the 11 tokens left"),
    ],
)
def test_no_room_and_a_stride_too_large_are_one_line_errors_and_write_nothing(
    extra, message, tmp_path, tiny_qa_bert, qa_v1_folder, capsys
):
    out = tmp_path / "run"
    assert run_main(["--output_dir", out, "--model", tiny_qa_bert, "--dataset", qa_v1_folder, *extra]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err, err
    assert not out.exists()


def test_the_scratch_span_head_loads_through_the_auto_class(tmp_path):
    import torch
    from transformers import AutoModelForQuestionAnswering

    from finetune.models.scratch import ScratchTransformerForQuestionAnswering, scratch_config_for

    model = ScratchTransformerForQuestionAnswering(scratch_config_for("question-answering", d_model=32, n_heads=2,
                                                                      n_layers=1, d_ff=64, vocab_size=50))  # fmt: skip
    model.save_pretrained(tmp_path)
    again = AutoModelForQuestionAnswering.from_pretrained(tmp_path).eval()
    ids = torch.randint(1, 50, (2, 7))
    types = torch.tensor([[0, 0, 0, 1, 1, 1, 1]] * 2)
    out = again(input_ids=ids, token_type_ids=types, start_positions=torch.tensor([3, 0]),
                end_positions=torch.tensor([4, 0]))  # fmt: skip
    assert out.start_logits.shape == out.end_logits.shape == (2, 7) and out.loss.item() > 0
    # the loss is the mean of the start and end cross-entropies, as BertForQuestionAnswering's
    ce = torch.nn.functional.cross_entropy
    expected = (ce(out.start_logits, torch.tensor([3, 0])) + ce(out.end_logits, torch.tensor([4, 0]))) / 2
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    model.eval()
    assert torch.allclose(model(input_ids=ids, token_type_ids=types).start_logits, again(input_ids=ids,
                          token_type_ids=types).start_logits)  # fmt: skip


# ---- the shared engine features, as for the other recipes: exact resume, two processes, a push -------------


@pytest.fixture(scope="module")
def small_qa_folder(tmp_path_factory):
    return write_jsonl_folder(tmp_path_factory.mktemp("qa-small"), train=24, test=6)


def flags(out, model, dataset, *extra):
    return ["--output_dir", out, "--model", model, "--dataset", dataset, *WINDOWS, "--batch_size", "8",
            "--eval_batch_size", "16", "--learning_rate", "1e-3", "--mixed_precision", "no", *extra]  # fmt: skip


@pytest.mark.slow
def test_a_resumed_run_ends_exactly_as_one_that_never_stopped(tmp_path, tiny_qa_bert, small_qa_folder):
    common = ["--max_steps", "4", "--checkpoint_steps", "1", "--eval_steps", "2", "--scratch_layers", "1",
              "--scratch_d_model", "32"]  # fmt: skip
    whole, paused = tmp_path / "whole", tmp_path / "paused"
    assert run_main(flags(whole, tiny_qa_bert, small_qa_folder, *common)) == 0
    assert run_main(flags(paused, tiny_qa_bert, small_qa_folder, *common, "--stop_after_steps", "2")) == 130
    assert run_main(flags(paused, tiny_qa_bert, small_qa_folder, *common, "--resume")) == 0
    for folder in (".", "scratch"):
        a, b = load_file(whole / folder / "model.safetensors"), load_file(paused / folder / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), folder
    first, second = (json.loads((p / "results.json").read_text())["models"] for p in (whole, paused))
    for x, y in zip(first, second):
        assert x["test"] == y["test"] and x["steps"] == y["steps"] == 4
        assert [h.get("eval") for h in x["history"]] == [h.get("eval") for h in y["history"]]
    assert (whole / "predictions.json").read_text() == (paused / "predictions.json").read_text()


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path, tiny_qa_bert, small_qa_folder):
    """Windows are sharded over two CPU processes and the logits gathered back by window id: every test question
    is answered once, and the numbers agree with one process within the tolerance of different batches."""

    def argv(out, batch_size):
        return [str(a) for a in flags(out, tiny_qa_bert, small_qa_folder, "--num_epochs", "2", "--compare", "false",
                                      "--batch_size", str(batch_size), "--eval_batch_size", "5")]  # fmt: skip

    one, two = tmp_path / "one", tmp_path / "two"
    proc = subprocess.run([sys.executable, "-m", "recipes.question_answering", *argv(one, 16)], env=ENV, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    cmd = [*LAUNCH, "--main_process_port", str(free_port()), "-m", "recipes.question_answering", *argv(two, 8)]
    proc = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run directory:") == 1, proc.stdout  # only the main process wrote and printed
    a, b = (json.loads((p / "results.json").read_text())["models"][0] for p in (one, two))
    assert a["steps"] == b["steps"]
    predictions = [json.loads((p / "predictions.json").read_text()) for p in (one, two)]
    assert predictions[0].keys() == predictions[1].keys()  # every question once: no window lost or repeated
    assert abs(a["test"]["f1"] - b["test"]["f1"]) <= 20.0, (a["test"], b["test"])  # percent, on 18 questions


@pytest.mark.slow
def test_train_with_push_to_hub(tmp_path, tiny_qa_bert, monkeypatch):
    folder = write_nested_folder(tmp_path / "squad2", version="v2.0", train=12, test=4, unanswerable=0.3)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_TOKEN", WRITE_TOKEN)
    repo_id = f"{USER}/tiny-qa"
    out = tmp_path / "run"
    with FakeHub(lifetime=600) as hub:
        code = run_main(flags(out, tiny_qa_bert, folder, "--max_steps", "2", "--compare", "false", "--push_to_hub",
                              "--hub_repo_id", repo_id, "--hub_endpoint", hub.url))  # fmt: skip
        assert code == 0
        stored = hub.files(repo_id)
    assert stored["model.safetensors"] == (out / "model.safetensors").read_bytes()
    assert {"results.json", "config.yaml", "README.md", "tokenizer.json"} <= set(stored)
    card = stored["README.md"].decode()
    assert "pipeline_tag: question-answering" in card and str(tmp_path) not in card


def test_the_study_arms_linear_probe_trains_the_span_head_only(tiny_qa_bert):
    """--freeze_base (finetune study's probe arm): the body frozen, the new span head trainable, and said."""
    from recipes.question_answering import QuestionAnsweringConfig, build_pretrained

    config = QuestionAnsweringConfig(model=str(tiny_qa_bert), freeze_base=True, max_length=64, doc_stride=16)
    model, _, _, note = build_pretrained(config)
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == ["qa_outputs.bias", "qa_outputs.weight"]
    assert "linear probe (--freeze_base)" in note
