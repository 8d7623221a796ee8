"""A finished run directory, opened for the verbs that read it: evaluate, predict, export, demo.

    run = open_run("runs/sentiment")            # the fine-tuned model (a LoRA adapter is merged in memory)
    run = open_run("runs/sentiment/scratch")    # the from-scratch model beside it
    run.kind.name, run.model, run.processor, run.label_names, run.config (config.yaml), run.results

What a verb needs to know about a model kind lives in one `Kind` subclass below: how its model class is named,
how labelled data become batches, which evaluator scores them, and what the ONNX graph takes as input. Adding a
kind (token classification, say) is one subclass registered in KINDS; the verbs never ask which kind they hold.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from finetune.core.checkpoints.safeload import check_weights
from finetune.core.config import load_yaml
from finetune.core.errors import UserError
from finetune.core.evaluation import (
    ClassificationEvaluator,
    LanguageModelEvaluator,
    QuestionAnsweringEvaluator,
    Seq2SeqEvaluator,
    TokenClassificationEvaluator,
    seq2seq_scores,
)
from finetune.core.qa_spans import predict_answer
from finetune.core.run_directory import refuse_unfinished
from finetune.data import text, tokens
from finetune.data.images import PACKAGED_IMAGES, load_image_classification
from finetune.data.labels import class_names_of, label_key, pick_columns
from finetune.data.lm import condition_prefix, limit, load_corpus, make_blocks, make_lm_loaders
from finetune.data.pairs import load_pairs
from finetune.data.pipeline import PixelNormalizer, image_loaders
from finetune.data.qa import load_qa
from finetune.data.qa_windows import EvalWindows, eval_windows
from finetune.data.qa_windows import make_loaders as qa_loaders
from finetune.data.sources import load_any
from finetune.data.text import PACKAGED_TEXT, load_text_classification, tokenize
from finetune.data.tokens import load_token_classification, tokenize_and_align
from finetune.models.lora import is_adapter_dir, load_adapter_run, read_adapter_config
from finetune.models.seq2seq import decode, generate_ids, generation_kwargs
from finetune.tasks import registry

# ---- model kinds ----------------------------------------------------------------------------------------------


class Kind:
    name: str  # the Hub's pipeline tag
    auto_class: str  # the transformers Auto class that rebuilds the model
    suffixes: tuple  # how architectures of this kind end (config.json's "architectures")
    modality: str  # "text" or "image": what a user gives it
    columns: dict  # the data columns it reads, and their default names

    def examples(self, run: Run, dataset: str, split: str, columns: dict):
        """A datasets.Dataset of labelled examples in the recipe's shape (text/image + integer label)."""
        raise NotImplementedError

    def loader(self, run: Run, examples, batch_size: int):
        """Batches of model inputs (+ labels) in a fixed order, as the training run's evaluation saw them."""
        raise NotImplementedError

    def evaluator(self, run: Run, loader=None):
        """The training run's evaluator for these batches (`loader`: what loader() returned)."""
        raise NotImplementedError

    def input_names(self, run: Run) -> list[str]:
        """The model inputs an exported graph takes, in order."""
        raise NotImplementedError

    def score(self, run: Run, examples, batch_size: int, progress: bool = True) -> Optional[dict]:
        """Metrics computed without the loader/evaluator loop (a model that must write text to be scored), or None:
        the verbs then run the model over loader() into evaluator()."""
        return None

    tags: tuple = ()  # pipeline tags of the tasks whose runs hold this kind (default: its own name)

    def holds(self, pipeline_tag: str) -> bool:
        return pipeline_tag == self.name or pipeline_tag in self.tags


class TextClassification(Kind):
    name, auto_class, modality = "text-classification", "AutoModelForSequenceClassification", "text"
    suffixes = ("ForSequenceClassification",)
    columns = {"text_column": "text", "label_column": "label"}

    def examples(self, run, dataset, split, columns):
        if split == "all":
            return all_rows(dataset, PACKAGED_TEXT, _pairs(columns), run.label_names)
        data = load_text_classification(
            dataset, columns["text_column"], columns["label_column"], run.label_names, run.seed
        )
        return data.splits[split]

    def loader(self, run, examples, batch_size):
        from datasets import DatasetDict

        tokenized = tokenize(
            DatasetDict({"eval": examples.select_columns(["text", "label"])}), run.processor, run.max_length
        )
        return text.make_loaders(tokenized, run.processor, batch_size, batch_size, run.seed)["eval"]

    def evaluator(self, run, loader=None):
        return ClassificationEvaluator(len(run.label_names))

    def input_names(self, run):
        import inspect

        names = list(getattr(run.processor, "model_input_names", ["input_ids", "attention_mask"]))
        takes = inspect.signature(run.model.forward).parameters  # the scratch model ignores token_type_ids
        return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names and n in takes]


class ImageClassification(Kind):
    name, auto_class, modality = "image-classification", "AutoModelForImageClassification", "image"
    suffixes = ("ForImageClassification",)
    columns = {"image_column": "image", "label_column": "label"}

    def examples(self, run, dataset, split, columns):
        if split == "all":
            rows = all_rows(dataset, PACKAGED_IMAGES, _pairs(columns), run.label_names)
            from datasets import Image

            return rows.cast_column("image", Image(decode=False))  # decoded by us: an unreadable file is named
        data = load_image_classification(
            dataset, columns["image_column"], columns["label_column"], run.label_names, run.seed
        )
        return data.splits[split]

    def loader(self, run, examples, batch_size):
        loaders, _ = image_loaders(
            {"eval": examples}, run.processor, batch_size, batch_size, run.seed, augment=False, num_workers=0
        )
        return NormalizedBatches(loaders["eval"], run.processor)

    def evaluator(self, run, loader=None):
        return ClassificationEvaluator(len(run.label_names))

    def input_names(self, run):
        return ["pixel_values"]


class NormalizedBatches:
    """The training pipeline's uint8 pixel batches, normalised as the model's on-device hook does in training
    (finetune.data.pipeline.normalize_on_device), so a saved model, and its ONNX graph, get float pixels."""

    def __init__(self, loader, processor):
        self.loader, self.normalize = loader, PixelNormalizer(processor)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield {**batch, "pixel_values": self.normalize(batch["pixel_values"])}


class TextGeneration(Kind):
    name, auto_class, modality = "text-generation", "AutoModelForCausalLM", "text"
    suffixes = ("ForCausalLM", "LMHeadModel")
    columns = {"text_column": "text", "label_column": "label"}

    def examples(self, run, dataset, split, columns):
        condition = bool(run.config.get("condition_on_label"))
        if split == "all":
            if condition:  # the model learnt "label: text"; score the texts the same way
                rows = all_rows(dataset, PACKAGED_TEXT, _pairs(columns))

                return rows.map(
                    lambda b: {"text": [f"{condition_prefix(l)} {t}" for t, l in zip(b["text"], b["label"])]},
                    batched=True,
                    remove_columns=["label"],
                )
            return all_rows(dataset, PACKAGED_TEXT, _pairs(columns, ["text_column"]))
        data = load_corpus(dataset, columns["text_column"], columns["label_column"], condition, run.seed)
        splits = data.splits
        if dataset == run.config.get("dataset"):  # the run's own data: the run's own limits, so its numbers repeat
            splits = limit(
                splits, None, run.config.get("max_eval_samples"), run.config.get("max_test_samples"), run.seed
            )
        return splits[split]

    def loader(self, run, examples, batch_size):
        from datasets import DatasetDict

        blocks = make_blocks(
            DatasetDict({"eval": examples.select_columns(["text"])}),
            run.processor,
            int(run.config.get("block_size") or 128),
            run.config.get("packing") or "group",
        )
        return make_lm_loaders(blocks, run.processor, batch_size, batch_size, run.seed)["eval"]

    def evaluator(self, run, loader=None):
        return LanguageModelEvaluator()

    def input_names(self, run):
        return ["input_ids", "attention_mask"]


class TokenClassification(Kind):
    name, auto_class, modality = "token-classification", "AutoModelForTokenClassification", "text"
    suffixes = ("ForTokenClassification",)
    columns = {"tokens_column": "tokens", "tags_column": "ner_tags"}

    def examples(self, run, dataset, split, columns):
        from datasets import concatenate_datasets

        # The tag handling of training: the source's scheme, then the same conversion or repair (results.json's
        # tag_scheme is the scheme after conversion, so it cannot stand in for the source's).
        data = load_token_classification(
            dataset,
            columns["tokens_column"],
            columns["tags_column"],
            run.label_names,
            int(run.config.get("tag_index", -1)),
            run.config.get("tag_scheme") or "auto",
            convert_tags_to=run.config.get("convert_tags_to"),
            repair_tags=bool(run.config.get("repair_tags")),
            seed=run.seed,
            dataset_config=run.config.get("dataset_config"),
        )
        if split == "all":
            return concatenate_datasets([data.splits[name] for name in ("train", "validation", "test")])
        return data.splits[split]

    def loader(self, run, examples, batch_size):
        from datasets import DatasetDict

        tokenized, _ = tokenize_and_align(
            DatasetDict({"eval": examples}), run.processor, run.max_length, run.label_names
        )
        return tokens.make_loaders(tokenized, run.processor, batch_size, batch_size, run.seed)["eval"]

    def evaluator(self, run, loader=None):
        mode = "strict" if run.config.get("strict") else "lenient"
        return TokenClassificationEvaluator(
            run.label_names, run.max_length, mode=mode, scheme=run.results.get("tag_scheme", "IOB2")
        )

    def input_names(self, run):
        return TextClassification.input_names(self, run)


class QuestionAnswering(Kind):
    name, auto_class, modality = "question-answering", "AutoModelForQuestionAnswering", "text"
    suffixes = ("ForQuestionAnswering",)
    columns = {
        "question_column": "question",
        "context_column": "context",
        "answers_column": "answers",
        "id_column": "id",
    }

    def examples(self, run, dataset, split, columns):
        from datasets import concatenate_datasets

        data = load_qa(
            dataset,
            seed=run.seed,
            dataset_config=run.config.get("dataset_config") if dataset == run.dataset else None,
            **columns,
        )
        if split == "all":
            return concatenate_datasets([data.splits[name] for name in ("train", "validation", "test")])
        limit = run.config.get("max_test_samples")
        if split == "test" and dataset == run.dataset and limit:  # the run's own test questions, as it scored them
            return data.splits["test"].select(range(min(int(limit), len(data.splits["test"]))))
        return data.splits[split]

    def settings(self, run) -> dict:
        """The run's window and answer settings (config.yaml), as its evaluation used them."""
        config = run.config
        return {
            "max_length": run.max_length,
            "doc_stride": int(config.get("doc_stride", 128)),
            "n_best_size": int(config.get("n_best_size", 20)),
            "max_answer_length": int(config.get("max_answer_length", 30)),
            "null_score_diff_threshold": float(config.get("null_score_diff_threshold", 0.0)),
        }

    def loader(self, run, examples, batch_size):
        from datasets import DatasetDict

        s, table = self.settings(run), EvalWindows()
        windows = eval_windows(examples, "eval", run.processor, s["max_length"], s["doc_stride"], table)
        loader = qa_loaders(DatasetDict({"eval": windows}), run.processor, batch_size, batch_size, run.seed)["eval"]
        return QABatches(loader, table, examples)

    def version_2(self, run, examples) -> bool:
        """SQuAD 2.0 style when the run's data was, or these examples hold unanswerable questions."""
        return bool(run.results.get("version_2")) or any(not a["text"] for a in examples["answers"])

    def evaluator(self, run, loader=None):
        s = self.settings(run)
        return QuestionAnsweringEvaluator(
            {"eval": loader.examples},
            loader.windows,
            self.version_2(run, loader.examples),
            s["max_length"],
            s["n_best_size"],
            s["max_answer_length"],
            s["null_score_diff_threshold"],
        )

    def input_names(self, run):
        return TextClassification.input_names(self, run)

    def answer(self, run, questions: list, contexts: list, batch_size: int = 32) -> list[dict]:
        """The run's answer to each (question, context): the evaluation's windows and n-best search, in fp32.
        Each: {text, start, end, score (its n-best probability), no_answer_probability, nbest}."""
        import torch
        from datasets import Dataset

        for i, (q, c) in enumerate(zip(questions, contexts)):
            if not str(q).strip() or not str(c).strip():
                raise UserError(
                    f"input {i + 1} has an empty {'question' if not str(q).strip() else 'context'}: give both"
                )
        examples = Dataset.from_dict(
            {"id": [str(i) for i in range(len(questions))], "question": list(questions), "context": list(contexts),
             "answers": [{"text": [], "answer_start": []}] * len(questions)}
        )  # fmt: skip
        batches = self.loader(run, examples, batch_size)
        logits = {}
        with torch.no_grad():
            for batch in batches:
                ids = batch.pop("window_id")
                out = run.model(**batch)
                for i, s, e in zip(ids.tolist(), out.start_logits.float().numpy(), out.end_logits.float().numpy()):
                    logits[i] = (s, e)
        by_example = {}
        for i in sorted(logits):
            by_example.setdefault(batches.windows.example[i], []).append((*logits[i], batches.windows.offsets[i]))
        s, v2 = self.settings(run), bool(run.results.get("version_2"))
        answers = []
        for index in range(len(questions)):
            a = predict_answer(
                contexts[index], by_example[index], s["n_best_size"], s["max_answer_length"], v2,
                s["null_score_diff_threshold"],
            )  # fmt: skip
            chosen = next((c for c in a["nbest"] if c["start"] == a["start"] and c["text"] == a["text"]), None)
            answers.append({**a, "probability": chosen["probability"] if chosen else 0.0})
        return answers


class QABatches:
    """A QA loader with what its evaluation needs: the windows' table and the examples they came from."""

    def __init__(self, loader, windows, examples):
        self.loader, self.windows, self.examples = loader, windows, examples

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        return iter(self.loader)


class Seq2Seq(Kind):
    """An encoder-decoder that writes text: translation and summarization runs. It is scored by what it generates
    (BLEU/chrF or ROUGE against the references), decoded as the run's test was (results.json's "generation")."""

    name, auto_class, modality = "text2text-generation", "AutoModelForSeq2SeqLM", "text"
    tags = ("translation", "summarization")
    encoder_decoder = True  # exported as two graphs, verified by decoding (finetune/commands/export.py)
    suffixes = ("EncoderDecoderModel", "ForConditionalGeneration", "MTModel", "ForSeq2Seq", "ForSeq2SeqLM")
    columns = {"source_column": None, "target_column": None, "source_lang": None, "target_lang": None}

    def task_name(self, run) -> str:
        return run.results.get("task") if run.results.get("task") in self.tags else "translation"

    def examples(self, run, dataset, split, columns):
        from datasets import concatenate_datasets

        data = load_pairs(
            dataset, task=self.task_name(run), seed=run.seed, dataset_config=run.config.get("dataset_config"), **columns
        )
        if split == "all":
            return concatenate_datasets([data.splits[name] for name in ("train", "validation", "test")])
        examples = data.splits[split]
        limit = run.config.get("max_test_samples") if split == "test" and dataset == run.dataset else None
        return examples.select(range(min(int(limit), len(examples)))) if limit else examples  # as the run's test

    def generation(self, run) -> dict:
        """How the run decoded: its generate() arguments, prefix and source length."""
        settings = dict(run.results.get("generation") or {})
        prefix = settings.pop("source_prefix", run.config.get("source_prefix") or "")
        settings.pop("lowercase_scoring", None)
        if not settings:
            settings = generation_kwargs(int(run.config.get("max_target_length") or 128))
        return {"prefix": prefix, "max_source_length": int(run.config.get("max_source_length") or 512), **settings}

    def write(self, run, sources: list[str], batch_size: int) -> list[str]:
        """The model's output for each source, decoded as the run's test was."""
        settings = self.generation(run)
        prefix, max_source_length = settings.pop("prefix"), settings.pop("max_source_length")
        ids = generate_ids(run.model, run.processor, sources, max_source_length, batch_size, prefix, **settings)
        return decode(run.processor, ids)

    def score(self, run, examples, batch_size, progress=True):
        outputs = self.write(run, list(examples["source"]), batch_size)
        lowercase = bool((run.results.get("generation") or {}).get("lowercase_scoring"))
        return seq2seq_scores(self.task_name(run), outputs, list(examples["target"]), lowercase=lowercase)

    def evaluator(self, run, loader=None):
        return Seq2SeqEvaluator(run.processor)

    def input_names(self, run):
        return ["input_ids", "attention_mask"]


KINDS = {
    kind.name: kind
    for kind in (
        TextClassification(),
        ImageClassification(),
        TextGeneration(),
        TokenClassification(),
        QuestionAnswering(),
        Seq2Seq(),
    )
}


# PEFT's task types -> our kinds (an image classifier's adapter has no task type of its own).
ADAPTER_KINDS = {
    "CAUSAL_LM": "text-generation",
    "SEQ_CLS": "text-classification",
    "TOKEN_CLS": "token-classification",
    "QUESTION_ANS": "question-answering",
    "SEQ_2_SEQ_LM": "text2text-generation",
}


def kind_of(architecture: str) -> Optional[Kind]:
    return next((k for k in KINDS.values() if architecture.endswith(k.suffixes)), None)


# ---- the run --------------------------------------------------------------------------------------------------


@dataclass
class Run:
    path: Path  # the model's folder: RUN_DIR, RUN_DIR/scratch, RUN_DIR/merged
    root: Path  # the folder holding results.json / config.yaml (RUN_DIR)
    kind: Kind
    model: object
    processor: object  # the tokenizer, or the image processor
    lora: bool = False
    config: dict = field(default_factory=dict)  # config.yaml
    results: dict = field(default_factory=dict)  # results.json

    @property
    def label_names(self) -> list[str]:
        id2label = getattr(self.model.config, "id2label", None) or {}
        unlabelled = ("text-generation", "question-answering")  # no classes (a QA head's two outputs are start/end)
        return [id2label[i] for i in sorted(id2label)] if self.kind.name not in unlabelled else []

    @property
    def role(self) -> str:
        """'pretrained' or 'scratch': which entry of results.json this model is."""
        return "scratch" if self.path.resolve() == (self.root / "scratch").resolve() else "pretrained"

    @property
    def task(self) -> Optional[registry.Task]:
        """The registered task that trained this run (results.json's "task"); None for a run of no registered task."""
        return registry.TASKS.get(self.results.get("task"))

    @property
    def entry(self) -> dict:
        return next((m for m in self.results.get("models", []) if m.get("role") == self.role), {})

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 42))

    @property
    def max_length(self) -> int:
        return int(self.config.get("max_length") or 512)

    @property
    def dataset(self) -> Optional[str]:
        return self.config.get("dataset")

    def scratch(self) -> Optional[Run]:
        """The from-scratch model of the same run, if it has one (and this is not it)."""
        folder = self.root / "scratch"
        if self.role == "scratch" or not (folder / "config.json").is_file():
            return None
        return open_run(folder)


def open_run(path, kinds=None, verb: str = "this command", attentions: bool = False) -> Run:
    """Load the model in `path` (a run directory, its scratch/ or merged/ folder) with its tokenizer or processor.

    kinds: the kind names the calling verb accepts; another kind is a one-line error naming the right verb.
    attentions: load with eager attention, so that output_attentions=True returns the weights (the demo).
    """
    # here, not at the top: transformers' modelling code (~2 s), only once a model is opened
    import finetune.models.scratch  # noqa: F401  registers the from-scratch models with the Auto classes

    path = Path(path)
    if not path.is_dir():
        raise UserError(f"run directory {path} does not exist: pass the --output_dir of a finished run")
    root = path if _has_run_files(path) or not _has_run_files(path.parent) else path.parent
    refuse_unfinished(root, verb)
    check_weights(path, "copy the run directory again from where it came from, or train it again")
    config, results = _read_yaml(root / "config.yaml"), _read_json(root / "results.json")
    if is_adapter_dir(path) and not (path / "config.json").is_file():
        # The adapter's task type says the kind before the (large) base model loads: a wrong verb fails at once.
        adapter_kind = ADAPTER_KINDS.get(read_adapter_config(path).get("task_type"))
        if adapter_kind is not None:
            _check_kind(KINDS[adapter_kind], kinds, path, verb)
        peft_model, _ = load_adapter_run(path)
        model, lora = peft_model.merge_and_unload(), True  # in memory: a plain model, which every verb knows
    elif (path / "config.json").is_file():
        from transformers import AutoConfig

        architectures = AutoConfig.from_pretrained(path).architectures or []
        kind = kind_of(architectures[0]) if architectures else None
        if kind is None:
            raise UserError(
                f"{path} holds a {', '.join(architectures) or 'model without architectures'}: finetune "
                f"reads {', '.join(KINDS)} models"
            )
        _check_kind(kind, kinds, path, verb)
        import transformers

        extra = {"attn_implementation": "eager"} if attentions else {}
        try:
            model = getattr(transformers, kind.auto_class).from_pretrained(path, **extra)
        except (OSError, ValueError) as err:
            raise UserError(f"could not load the model in {path}: {str(err).splitlines()[0]}") from None
        lora = False
    else:
        raise UserError(
            f"{path} holds no saved model (no config.json or adapter_config.json): pass a run directory "
            "written by finetune train"
        )
    kind = kind_of(type(model).__name__)
    if kind is None:
        raise UserError(f"{path} holds a {type(model).__name__}: finetune reads {', '.join(KINDS)} models")
    _check_kind(kind, kinds, path, verb)
    if attentions and hasattr(model, "set_attn_implementation") and "Scratch" not in type(model).__name__:
        try:  # a merged LoRA base was loaded with its default (SDPA) attention, which returns no weights
            model.set_attn_implementation("eager")
        except (ValueError, AttributeError):
            pass
    task = registry.TASKS.get(results.get("task"))
    if task is not None and not kind.holds(task.pipeline_tag):
        raise UserError(
            f"{root / 'results.json'} says the task {task.name} ({task.pipeline_tag}), but {path} holds a "
            f"{kind.name} model: the folder mixes two runs; train it again into a fresh --output_dir"
        )
    model.eval()
    return Run(path, root, kind, model, _processor(path, kind), lora, config, results)


def _check_kind(kind: Kind, kinds, path: Path, verb: str) -> None:
    if kinds is None or kind.name in kinds:
        return
    hint = {"text-generation": f"use `finetune generate {path} PROMPT` or `finetune evaluate {path}`"}.get(
        kind.name, f"{verb} takes {' or '.join(kinds)} models"
    )
    raise UserError(f"{path} holds a {kind.name} model, which {verb} does not take: {hint}")


def _processor(path: Path, kind: Kind):
    if kind.modality == "image":
        from transformers import AutoImageProcessor

        if not (path / "preprocessor_config.json").is_file():
            raise UserError(f"{path} holds no image processor (preprocessor_config.json): save one beside the model")
        return AutoImageProcessor.from_pretrained(path)
    from transformers import AutoTokenizer

    if not (path / "tokenizer_config.json").is_file():
        raise UserError(f"{path} holds no tokenizer (tokenizer_config.json): save one beside the model")
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # as in training (finetune.models.loading.load_tokenizer)
    return tokenizer


def _has_run_files(folder: Path) -> bool:
    return (folder / "results.json").is_file() or (folder / "config.yaml").is_file()


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON ({err}): restore it, or retrain") from None


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        return {}

    return load_yaml(path)


# ---- data -----------------------------------------------------------------------------------------------------


def all_rows(dataset: str, packaged: dict, columns: dict, label_names: Optional[list[str]] = None):
    """Every row of every split of a source, as the recipe's columns (columns: {recipe name: (source column,
    flag)}), labels matched by name against the model's label_names (an unknown one is an error naming it)."""
    from datasets import Value, concatenate_datasets

    raw, _ = load_any(dataset, packaged)
    raw = pick_columns(raw, dataset, columns)
    rows = concatenate_datasets(list(raw.values())) if len(raw) > 1 else next(iter(raw.values()))
    if label_names is None or "label" not in rows.column_names:
        return rows
    class_names = class_names_of(rows)
    index = {name: i for i, name in enumerate(label_names)}

    def encode(batch):
        ids = []
        for value in batch["label"]:
            key = label_key(value, class_names)
            if key not in index:
                raise UserError(
                    f"label {key!r} in {dataset} is not one of the model's labels {label_names}: fix the "
                    f"data (labels are matched by name against the run's id2label)"
                )
            ids.append(index[key])
        return {"label": ids}

    if not class_names:
        rows = rows.cast_column("label", Value("string"))
    return rows.map(encode, batched=True, desc="labels").cast_column("label", Value("int64"))


def _pairs(columns: dict, names=None) -> dict:
    """{"text_column": "body", ...} -> {"text": ("body", "--text_column"), ...}, as pick_columns takes them."""
    return {
        name.removesuffix("_column"): (value, f"--{name}")
        for name, value in columns.items()
        if names is None or name in names
    }
