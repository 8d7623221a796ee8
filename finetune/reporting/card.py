"""The model card (README.md) of a finished run, built only from results.json and config.yaml.

    write_model_card(run_dir, repo_id=None, what="auto") -> RUN_DIR/README.md

Training writes the card at the end of every run; a push rewrites it with the repo id first (finetune/reporting/hub.py).
The card states what results.json states and guesses nothing: the base model's Hub id (`base_model`, null for an
offline stand-in or a local folder, which are named by `base_model_origin` instead), whether the data came from
the Hub (`dataset_is_hub`), which metric selected the model and whether higher is better (`metric_for_best`,
`greater_is_better`). A card never shows the writer's filesystem: a value that is an absolute or home path
keeps only its last part. The card is written atomically, and the same run and repo id give the same bytes.

Importing this module is cheap: huggingface_hub and yaml are imported inside the functions that need them.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from finetune.core.atomic_io import atomic_write_text, disk_errors
from finetune.core.config import not_hyperparameters
from finetune.core.errors import UserError
from finetune.core.secrets import is_secret_name
from finetune.reporting.tables import fmt_value, markdown_table

DEFAULT_LICENSE = "apache-2.0"
# An absolute or home path (/home/me/x.csv, ~/data): not after a word character, '.', ':' or '/', so URLs,
# Hub ids (org/model), relative paths and "samples/s" are left alone.
LOCAL_PATH = re.compile(r"(?<![\w.:/-])~?/(?=[^\s/`'\"|,;()\[\]])[^\s`'\"|,;()\[\]]*")

_SNIPPET_INPUTS = {
    "text-classification": ("classifier", '"What a lovely flight, thank you!"'),
    "text-generation": ("generator", '"Once upon a time", max_new_tokens=40'),
    "image-classification": ("classifier", '"path/to/image.png"'),
    "token-classification": ("tagger", '"Angela Merkel met Emmanuel Macron in Paris", aggregation_strategy="first"'),
}


# ------------------------------------------------------------------------------------------------ reading a run
def load_run(run_dir: Path) -> tuple[dict, dict]:
    """results.json (required) and config.yaml (optional) of a finished run."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist: pass the folder a training run wrote (RUN_DIR)")
    results_path = run_dir / "results.json"
    if not results_path.is_file():
        raise UserError(
            f"{results_path} is missing: {run_dir} is not a finished run "
            "(training writes results.json at the end); finish or re-run training first"
        )
    try:
        results = json.loads(results_path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise UserError(f"{results_path} is not valid JSON ({err}); re-run training to rewrite it")
    if not isinstance(results, dict):
        raise UserError(f"{results_path} should hold a JSON object; re-run training to rewrite it")
    config: dict = {}
    config_path = run_dir / "config.yaml"
    if config_path.is_file():
        import yaml

        try:
            loaded = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise UserError(f"{config_path} is not valid YAML ({' '.join(str(err).split())}); fix or delete it")
        config = loaded if isinstance(loaded, dict) else {}
    return results, config


def flatten(config: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Nested config mappings as (dotted.name, value) rows."""
    rows = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += flatten(value, prefix=f"{name}.")
        else:
            rows.append((name, value))
    return rows


def _models(results: dict) -> list[dict]:
    return [m for m in results.get("models") or [] if isinstance(m, dict)]


def _main_model(results: dict) -> dict:
    """The model the repo holds: the one saved at the run's root (dir "."), else the pretrained one, else the first."""
    models = _models(results)
    for test in (
        lambda m: m.get("dir") in (".", "", None) and m.get("role") != "scratch",
        lambda m: m.get("role") == "pretrained",
        lambda m: True,
    ):
        for model in models:
            if test(model):
                return model
    return {}


# ------------------------------------------------------------------------------------------------ text pieces
def public(text: str) -> str:
    """`text` without the writer's filesystem: every absolute or home path shortened to its last part."""
    return LOCAL_PATH.sub(lambda m: Path(m.group(0)).name or "~", text)


LABEL_KEYS = {"labels", "label_names", "id2label", "label2id"}


def public_record(name: str, text: str, model: str | None = None) -> str:
    """A run record (results.json, config.yaml, adapter_config.json) as it is published: `public` applied to each
    string value, not to the file's text, so YAML keeps its types ("2024-06-01" stays a string) and nothing
    outside a value changes. A LoRA adapter's local base model folder becomes `model`, the run's --model as given
    (a Hub id, or an offline alias such as minilm), which says more than the folder's last part (often "model")."""
    import yaml

    def scrub(value):
        if isinstance(value, str):
            return public(value)
        if isinstance(value, dict):  # label names are the model's vocabulary, never a path: kept as they are
            return {key: item if key in LABEL_KEYS else scrub(item) for key, item in value.items()}
        if isinstance(value, list):
            return [scrub(item) for item in value]
        return value

    if name.endswith(".json"):
        data = json.loads(text)
        base = data.get("base_model_name_or_path") if name == "adapter_config.json" else None
        data = scrub(data)
        if model and isinstance(base, str) and LOCAL_PATH.match(base):
            data["base_model_name_or_path"] = public(model)
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    return yaml.safe_dump(scrub(yaml.safe_load(text)), sort_keys=False, allow_unicode=True)


def _fmt(value) -> str:
    """A card's cell: tables.fmt_value with trailing zeros dropped, text without local paths or a bare "|"."""
    return fmt_value(value, trim=True, text=lambda t: public(t).replace("|", "\\|").replace("\n", " "))


def _metric_names(results: dict) -> list[str]:
    names: list[str] = []
    best = results.get("metric_for_best")
    if best:
        names.append(best)
    for model in _models(results):
        for key in model.get("test") or {}:
            if key not in names:
                names.append(key)
    return names


def _comparison_table(results: dict) -> list[str]:
    metrics = _metric_names(results)
    header = ["model", "role", "parameters", "train samples", "train time (s)", "samples/s"] + [
        f"test {m}" for m in metrics
    ]
    rows = []
    for model in _models(results):
        test = model.get("test") or {}
        cells = [
            model.get("name"),
            model.get("role"),
            model.get("parameters"),
            model.get("train_samples"),
            model.get("train_seconds"),
            model.get("samples_per_second"),
        ] + [test.get(m) for m in metrics]
        rows.append([_fmt(c) for c in cells])
    return markdown_table(header, rows)


def _per_type_table(results: dict) -> list[str]:
    """Test scores by entity type (or class), for models whose results.json entry has `test_per_type`."""
    models = [m for m in _models(results) if m.get("test_per_type")]
    if not models:
        return []
    header = ["model", "type", "precision", "recall", "f1", "entities"]
    rows = []
    for model in models:
        for kind, scores in model["test_per_type"].items():
            cells = [
                model.get("name"),
                kind,
                scores.get("precision"),
                scores.get("recall"),
                scores.get("f1"),
                scores.get("number"),
            ]
            rows.append([_fmt(c) for c in cells])
    intro = "Test scores by entity type (an entity counts only if its type and exact span match):"
    return ["", intro, ""] + markdown_table(header, rows)


def _comparison_sentence(results: dict) -> str | None:
    metric = results.get("metric_for_best") or next(iter(_metric_names(results)), None)
    by_role = {m.get("role"): m for m in _models(results)}
    pre, scratch = by_role.get("pretrained"), by_role.get("scratch")
    if not (metric and pre and scratch):
        return None
    a, b = (pre.get("test") or {}).get(metric), (scratch.get("test") or {}).get(metric)
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return None
    # results.json says; accuracy-like if absent
    greater_is_better = results.get("greater_is_better", True) is not False
    better = (a > b) if greater_is_better else (a < b)
    verdict = "better" if better else ("the same" if a == b else "worse")
    init = scratch.get("initialised_from")
    start = f", started from our own {init['objective']} pretraining run {init['run']}," if init else ""
    return (
        f"On the test set the fine-tuned pretrained model scores {metric} {_fmt(a)} against {_fmt(b)} for the "
        f"model trained from scratch{start} on the same data ({verdict}; "
        f"{'higher' if greater_is_better else 'lower'} is better)."
    )


def _versions() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    rows = []
    for package in ("finetune", "transformers", "torch", "peft", "accelerate", "huggingface_hub"):
        try:
            rows.append(f"- {package} {version(package)}")
        except PackageNotFoundError:
            pass
    return rows


def _snippet(pipeline_tag: str | None, model_ref: str, labels: list | None, adapter_only: bool) -> list[str]:
    task = pipeline_tag or "text-classification"
    if task in SEQ2SEQ_TAGS:  # transformers 5 removed the translation / summarization pipelines
        return _seq2seq_snippet(task, model_ref, adapter_only)
    var, example = _SNIPPET_INPUTS.get(task, ("pipe", "..."))
    lines = ["```python", "from transformers import pipeline", "", f'{var} = pipeline("{task}", model="{model_ref}")']
    if task == "text-generation":
        lines.append(f'print({var}({example})[0]["generated_text"])')
    else:
        lines.append(f"print({var}({example}))")
    lines.append("```")
    if labels and task != "text-generation":
        lines.append(f"\nLabels: {', '.join(f'`{label}`' for label in labels)}.")
    if adapter_only:
        lines.append(
            "\nThis repo holds a LoRA adapter: `peft` must be installed, and the base model named in "
            "`adapter_config.json` (`base_model_name_or_path`) must be loadable where you run it."
        )
    return lines


SEQ2SEQ_TAGS = ("translation", "summarization", "text2text-generation")


def _seq2seq_snippet(task: str, model_ref: str, adapter_only: bool) -> list[str]:
    example = "Thou shalt not kill." if task == "translation" else "The European Commission said on Thursday ..."
    lines = [
        "```python",
        "from transformers import AutoModelForSeq2SeqLM, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{model_ref}")',
        f'model = AutoModelForSeq2SeqLM.from_pretrained("{model_ref}")',
        f'inputs = tokenizer(["{example}"], return_tensors="pt")',
        "print(tokenizer.batch_decode(model.generate(**inputs, max_new_tokens=64), skip_special_tokens=True))",
        "```",
    ]
    if adapter_only:
        lines.append("\nThis repo holds a LoRA adapter: load it with `peft.AutoPeftModelForSeq2SeqLM` instead.")
    return lines


# ------------------------------------------------------------------------------------------------ the card
def _is_adapter_only(run_dir: Path, what: str) -> bool:
    return what == "adapter" or (
        what == "auto" and (run_dir / "adapter_config.json").is_file() and not (run_dir / "config.json").is_file()
    )


def _metadata(run_dir: Path, results: dict, config: dict, model_name: str, adapter_only: bool):
    """The card's YAML header: license, library, base model and dataset (Hub ids only), tags, model-index."""
    from huggingface_hub import EvalResult, ModelCardData

    task = results.get("task") or config.get("task") or "fine-tuning"
    pipeline_tag = results.get("pipeline_tag") or config.get("pipeline_tag")
    dataset = str(results.get("dataset") or config.get("dataset") or "unknown")
    dataset_id = dataset if results.get("dataset_is_hub") else None
    eval_results = [
        EvalResult(
            task_type=pipeline_tag or str(task),
            task_name=str(task),
            dataset_type=dataset_id or public(dataset),
            dataset_name=public(dataset),
            dataset_split="test",
            metric_type=metric,
            metric_name=f"test {metric}",
            metric_value=value,
        )
        for metric, value in (_main_model(results).get("test") or {}).items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    ]
    tags = ["finetune", str(task)]
    if config.get("lora") or (run_dir / "adapter_config.json").is_file():
        tags.append("lora")
    if any(m.get("role") == "scratch" for m in _models(results)):
        tags.append("from-scratch-comparison")
    return ModelCardData(
        license=str(config.get("license") or results.get("license") or DEFAULT_LICENSE),
        library_name="peft" if adapter_only else "transformers",
        base_model=results.get("base_model") or None,
        datasets=[dataset_id] if dataset_id else None,
        tags=tags,
        pipeline_tag=pipeline_tag,
        model_name=model_name if eval_results else None,
        eval_results=eval_results or None,
    )


def _introduction(results: dict, config: dict, what: str, adapter_only: bool) -> str:
    """One sentence: what was fine-tuned (named by Hub id, or by name and origin), for which task, on which data."""
    main = _main_model(results)
    base_model = results.get("base_model")
    if base_model:
        base_text = f"[`{base_model}`](https://huggingface.co/{base_model})"
    elif main:
        origin = results.get("base_model_origin")
        base_text = (
            f"`{main.get('name') or 'the pretrained model'}`"
            + (f" ({origin})" if origin else "")
            + ", an offline stand-in for a Hub checkpoint, so `base_model` is not set in the metadata"
        )
    else:
        base_text = "a pretrained checkpoint"
    what_text = (
        "a LoRA adapter for"
        if adapter_only
        else ("the merged LoRA fine-tune of" if what == "merged" else "a fine-tuned version of")
    )
    dataset = str(results.get("dataset") or config.get("dataset") or "unknown")
    data_text = (
        f"[`{dataset}`](https://huggingface.co/datasets/{dataset})" if results.get("dataset_is_hub") else f"`{dataset}`"
    )
    if results.get("dataset_source"):
        data_text += f", from {results['dataset_source']},"
    task = results.get("task") or config.get("task") or "fine-tuning"
    return public(
        f"This model is {what_text} {base_text}, trained for **{task}** on {data_text} with `finetune` "
        "(Hugging Face Transformers + Accelerate)."
    )


def _training_procedure(results: dict, config: dict) -> list[str]:
    body = ["## Training procedure", ""]
    left_out = not_hyperparameters()  # where and how the run was written (the fields' "bookkeeping" flag)
    hyper = [(name, value) for name, value in flatten(config) if name not in left_out and not is_secret_name(name)]
    if hyper:
        body += ["Hyperparameters (the resolved `config.yaml`, also in this repo):", ""]
        body += markdown_table(["parameter", "value"], [[name, _fmt(value)] for name, value in hyper])
    else:
        body.append("No config.yaml was found in the run directory.")
    main = _main_model(results)
    if main.get("train_samples") or main.get("train_seconds"):
        body += [
            "",
            f"The fine-tuned model saw {_fmt(main.get('train_samples'))} training samples in "
            f"{_fmt(main.get('train_seconds'))} s ({_fmt(main.get('samples_per_second'))} samples/s).",
        ]
    return body


def build_model_card(run_dir: str | os.PathLike, repo_id: str | None = None, what: str = "auto"):
    """The `huggingface_hub.ModelCard` for a run (not written anywhere). See `write_model_card`."""
    from huggingface_hub import ModelCard

    run_dir = Path(run_dir)
    results, config = load_run(run_dir)
    adapter_only = _is_adapter_only(run_dir, what)
    model_name = (repo_id.split("/")[-1] if repo_id else None) or run_dir.resolve().name
    data = _metadata(run_dir, results, config, model_name, adapter_only)

    body = [f"# {model_name}", "", _introduction(results, config, what, adapter_only)]
    body += [
        "",
        "## Results",
        "",
        "Test-set scores of every model the run trained (the pretrained model fine-tuned, and the same "
        "task learned from scratch for comparison):",
        "",
    ]
    body += _comparison_table(results) if _models(results) else ["(results.json lists no models)"]
    body += _per_type_table(results)
    if sentence := _comparison_sentence(results):
        body += ["", sentence]
    if (run_dir / "learning_curves.png").is_file():
        body += ["", "![learning curves](learning_curves.png)"]
    body += [""] + _training_procedure(results, config)
    body += ["", "## How to use", ""]
    body += _snippet(data.pipeline_tag, repo_id or "YOUR_NAME/REPO_NAME", results.get("labels"), adapter_only)
    if not repo_id:
        body.append(f"\nBefore it is pushed, pass the local run directory (`{model_name}`) as `model=` instead.")
    body += [
        "",
        "## Limitations",
        "",
        "Scores come from one run on one test split; check them on your own data before relying on the model. "
        "The training data's own license applies to what the model learned from it.",
        "",
        "## Framework versions",
        "",
    ] + _versions()
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


def write_model_card(run_dir: str | os.PathLike, repo_id: str | None = None, what: str = "auto") -> Path:
    """Build the model card from RUN_DIR/results.json + config.yaml and write it to RUN_DIR/README.md, atomically.

    `repo_id` fills the how-to-use snippet (a placeholder when None). The card is deterministic: the same run
    and repo id give the same bytes, so rewriting it is harmless; a failure while writing leaves the old card.
    """

    card = build_model_card(run_dir, repo_id=repo_id, what=what)
    path = Path(run_dir) / "README.md"
    text = str(card)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        with disk_errors("the model card README.md", Path(run_dir)):
            atomic_write_text(path, text)
    return path
