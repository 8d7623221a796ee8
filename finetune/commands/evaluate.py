"""`finetune evaluate RUN_DIR [--dataset SOURCE] [--split test|validation|train|all] [--output FILE]`: score a
saved model on labelled data.

    finetune evaluate runs/sentiment                                # the run's own test split, as training scored it
    finetune evaluate runs/sentiment/scratch                        # the from-scratch model of the same run
    finetune evaluate runs/sentiment --dataset new.csv --output scores.json   # every row of a new labelled file
    finetune evaluate runs/text_generation                          # a causal LM: perplexity on the text
    finetune evaluate runs/question_answering --dataset dev-v1.1.json   # extractive QA: exact match and F1

The data go through the recipe's own loaders and the training run's evaluator (finetune/core/evaluation.py, metrics
from finetune/core/metrics/), in the run's evaluation batch size and order, so the run's own test split repeats the
test numbers of its results.json exactly. Labels are matched by name against the model's id2label.
Classifiers also get a per-class table and a confusion matrix (JSON, and a PNG beside --output).

(Named evaluate_run, not evaluate: the metric modules import Hugging Face's `evaluate` package, and a module
of that name here would shadow it whenever this folder is on sys.path, e.g. `python finetune/evaluate.py`.)
"""

from __future__ import annotations

from pathlib import Path

from finetune.core.atomic_io import atomic_write_json, disk_errors
from finetune.core.errors import CommandParser, UserError, user_errors_exit
from finetune.core.run_directory import writing_into
from finetune.reporting.report import confusion_matrix, plot_confusion_matrix
from finetune.reporting.tables import fmt_value, text_table
from finetune.tasks.runs import open_run

SPLITS = ("test", "validation", "train", "all")


def evaluate_run(run, dataset=None, split=None, columns=None, batch_size=None, progress=True) -> dict:
    """Score `run` (finetune.tasks.runs.Run) on a split of `dataset` (default: the run's own data and its test split;
    for other data, every row). Returns {"metrics", "examples", "dataset", "split", and for classifiers
    "per_class", "confusion_matrix"; for taggers "per_type", the entity scores by type, with per_class over word
    tags}."""
    import torch
    from tqdm.auto import tqdm

    own = dataset is None or dataset == run.dataset
    dataset = dataset or run.dataset
    if not dataset:
        raise UserError(f"{run.root} has no config.yaml naming its dataset: pass --dataset SOURCE")
    split = split or ("test" if own else "all")
    columns = {
        name: (columns or {}).get(name) or run.config.get(name) or default for name, default in run.kind.columns.items()
    }
    examples = run.kind.examples(run, dataset, split, columns)
    if len(examples) == 0:
        raise UserError(f"the {split} split of {dataset} is empty: nothing to evaluate")
    batch_size = batch_size or int(run.config.get("eval_batch_size") or 64)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = run.model.to(device)
    evaluator = None
    metrics = run.kind.score(run, examples, batch_size, progress)  # a model scored by the text it writes
    if metrics is None:
        loader = run.kind.loader(run, examples, batch_size)
        evaluator = run.kind.evaluator(run, loader)
        evaluator.reset()
        bookkeeping = {"labels", *getattr(evaluator, "batch_only", ())}  # not model inputs (QA's window_id)
        with torch.no_grad():
            for batch in tqdm(loader, desc=f"evaluate {split}", disable=not progress, leave=False):
                batch = {k: v.to(device) for k, v in batch.items()}
                outputs = model(**{k: v for k, v in batch.items() if k not in bookkeeping})
                evaluator.add(batch, outputs, lambda tensors: tensors)
        metrics = evaluator.compute()
    report = {
        "model": str(run.path),
        "kind": run.kind.name,
        "dataset": dataset,
        "split": split,
        "examples": len(examples),
        "precision": "fp32",
        "metrics": metrics,
    }
    trained_test_precision = run.entry.get("test_precision", "fp32")  # runs before this field: fp32 or autocast
    if own and split == "test" and trained_test_precision != "fp32":
        report["note"] = (
            f"results.json's test numbers were computed in {trained_test_precision} (sharded training); "
            f"these are fp32, the precision of the saved model: small differences are expected"
        )
    if hasattr(evaluator, "per_type"):  # a tagger: entity scores by type
        report["per_type"] = evaluator.per_type
    if hasattr(evaluator, "predictions") and run.label_names:
        references, predictions = class_ids(evaluator, run.label_names)
        report["per_class"] = per_class(references, predictions, run.label_names)
        report["references"], report["predictions"] = references, predictions
    return report


def class_ids(evaluator, label_names) -> tuple[list[int], list[int]]:
    """(references, predictions) as class ids: one per example for a classifier, one per word for a tagger."""
    import torch

    if hasattr(evaluator, "per_type"):  # a tagger keeps tag names per sentence
        index = {name: i for i, name in enumerate(label_names)}
        return (
            [index[tag] for tags in evaluator.references for tag in tags],
            [index[tag] for tags in evaluator.predictions for tag in tags],
        )
    return torch.cat(evaluator.references).tolist(), torch.cat(evaluator.predictions).tolist()


def per_class(references, predictions, label_names) -> dict:
    """{label: precision, recall, f1, support}, from the confusion matrix (rows true, columns predicted)."""

    counts = confusion_matrix(references, predictions, len(label_names))
    table = {}
    for i, name in enumerate(label_names):
        true_positive = counts[i][i]
        predicted = sum(row[i] for row in counts)
        support = sum(counts[i])
        precision = true_positive / predicted if predicted else 0.0
        recall = true_positive / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        table[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return table


def format_report(report: dict) -> str:
    lines = [
        f"{report['model']} ({report['kind']}) on {report['dataset']}, "
        f"{report['split']}: {report['examples']} examples, "
        f"computed in {report['precision']}"
    ]
    if report.get("note"):
        lines.append(f"  note: {report['note']}")
    lines += [f"  {name:<10} {value:.4f}" for name, value in report["metrics"].items()]
    for key, first, count in (("per_type", "entity", "number"), ("per_class", "label", "support")):
        if key in report:
            header = [first, "precision", "recall", "f1", "entities" if key == "per_type" else "support"]
            rows = [
                [name, *(fmt_value(row[k]) for k in ("precision", "recall", "f1", count))]
                for name, row in report[key].items()
            ]
            lines.append(text_table(header, rows, align="lr", rules=False, indent="  "))
    return "\n".join(lines)


def write_report(report: dict, output: Path, label_names) -> list[Path]:
    """output (JSON: metrics, per-class table, confusion matrix) and, for classifiers, confusion_matrix_<stem>.png
    (+ .json) beside it."""

    output = Path(output)
    if output.is_dir():
        raise UserError(f"--output {output} is a folder: name a JSON file, e.g. {output / 'evaluation.json'}")
    data = {k: v for k, v in report.items() if k not in ("references", "predictions")}
    written = [output]
    if "per_class" in report:
        data["labels"] = label_names
        data["confusion_matrix"] = confusion_matrix(report["references"], report["predictions"], len(label_names))
        written.append(
            plot_confusion_matrix(
                output.parent,
                output.stem,
                report["references"],
                report["predictions"],
                label_names,
                f"{Path(report['model']).name}: {report['dataset']} ({report['split']})",
            )
        )
    with disk_errors(output.name, output.parent):
        atomic_write_json(output, data)
    return written


def main(argv=None) -> int:
    parser = CommandParser(prog="finetune evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (or its scratch/ or merged/ folder)")
    parser.add_argument(
        "--dataset", default=None, help="local file or folder, Hub name, or packaged alias (default: the run's)"
    )
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default=None,
        help="which split (default: test for the run's own data, all rows for other data)",
    )
    parser.add_argument("--text_column", default=None)
    parser.add_argument("--image_column", default=None)
    parser.add_argument("--label_column", default=None)
    for name in ("question_column", "context_column", "answers_column", "id_column"):  # question answering
        parser.add_argument(f"--{name}", default=None)
    parser.add_argument("--source_column", default=None, help="translation / summarization: the source text")
    parser.add_argument("--target_column", default=None, help="translation / summarization: the reference")
    parser.add_argument("--batch_size", type=int, default=None, help="default: the run's eval_batch_size")
    parser.add_argument(
        "--output", type=Path, default=None, help="write the report as JSON (and a confusion-matrix PNG beside it)"
    )
    with user_errors_exit():
        args = parser.parse_args(argv)
        if args.batch_size is not None and args.batch_size < 1:
            raise UserError(f"--batch_size must be at least 1, got {args.batch_size}")
        import datasets

        datasets.disable_progress_bars()
        run = open_run(args.run_dir, verb="finetune evaluate")
        columns = {
            "text_column": args.text_column,
            "image_column": args.image_column,
            "label_column": args.label_column,
            **{n: getattr(args, n) for n in ("question_column", "context_column", "answers_column", "id_column")},
            "source_column": args.source_column,
            "target_column": args.target_column,
        }
        report = evaluate_run(run, args.dataset, args.split, columns, args.batch_size)
        print(format_report(report))
        if args.output is not None:
            with writing_into(args.output, "finetune evaluate --output"):  # in a run: its lock, its manifest
                written = write_report(report, args.output, run.label_names)
            print(f"wrote {', '.join(str(p) for p in written)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
