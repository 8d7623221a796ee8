"""Extractive question answering: find the answer to a question as a span of a context, fine-tuning a pretrained
encoder (BERT's SQuAD task), and compare it with a transformer trained from scratch.

    finetune train question_answering                                                  # aclsum-qa, packaged (offline)
    finetune train question_answering --model bert-base-uncased --dataset rajpurkar/squad        # with a network
    finetune train question_answering --model bert-base-uncased --dataset rajpurkar/squad_v2     # unanswerable too
    finetune train question_answering --dataset train-v1.1.json                        # SQuAD's own nested JSON
    finetune train question_answering --dataset qa.jsonl --question_column q --context_column passage

The offline default, --dataset aclsum-qa, is NOT SQuAD: it is built from the aclsum package (ACL papers whose
challenge / approach / outcome sentences annotators highlighted), three template questions, whole-sentence answers.
Its origin, size and licence are printed with every run.

How it works, as Hugging Face's run_qa.py does it (and where it differs, why):
    1. data        finetune.data.qa: any source -> id / question / context / answers, answer_start checked
                   against the context, SQuAD 2.0 style (unanswerable questions) detected from the data
    2. windows     finetune.data.qa_windows: [CLS] question [SEP] context [SEP], only the context cut, windows of
                   --max_length tokens sharing --doc_stride; the answer's tokens in the window that holds it
                   whole, [CLS] in the others
    3. model       a start and an end score per token (AutoModelForQuestionAnswering: only qa_outputs is new)
    4. answers     finetune.core.qa_spans: the n-best spans over all windows, mapped back to characters; on v2
                   data the null answer against the best span (--null_score_diff_threshold), and a real
                   no-answer probability for the squad_v2 metric's best-threshold figures
    5. metrics     exact match and F1 with SQuAD's normalisation (squad / squad_v2, local evaluate modules)

Each step is a function you can call from your own code:

    from recipes.question_answering import QuestionAnsweringConfig, build_data, build_pretrained, build_scratch, run
    results = run(QuestionAnsweringConfig(dataset="train-v1.1.json", output_dir="runs/squad"))
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from finetune.core import engine
from finetune.core.atomic_io import atomic_write_json
from finetune.core.config import TrainingConfig, defaults_from
from finetune.core.errors import UserError
from finetune.core.evaluation import QuestionAnsweringEvaluator
from finetune.data.packaged import ACLSUM_QA
from finetune.data.qa import load_qa
from finetune.data.qa_windows import make_loaders, make_windows
from finetune.models.loading import (
    check_fits,
    freeze_base,
    load_pretrained,
    load_tokenizer,
    probe_note,
    resolve,
    save_model,
)
from finetune.models.lora import apply_lora, save_run_model
from finetune.models.scratch_init import check_pretraining_run, start_from
from finetune.reporting import report
from finetune.tasks import kit, registry

TASK = "question_answering"
METRIC_FOR_BEST = registry.get(TASK).metric  # SQuAD F1 (token overlap with the best-matching reference answer)


@defaults_from(Path(__file__).parent / "configs" / "question_answering.yaml")
@dataclass
class QuestionAnsweringConfig(kit.HubFields, TrainingConfig):
    hub_example: ClassVar[str] = "your-user/minilm-squad"
    scratch_init_kind: ClassVar[str] = "encoder"  # --scratch_init takes a `finetune pretrain mlm` run
    supports_skip_pretrained: ClassVar[bool] = True  # (finetune study's scratch arms)
    supports_freeze_base: ClassVar[bool] = True  # (the study's linear probe)

    model: str = field(default="minilm", metadata={"help": "Hub name, local folder, or offline alias (minilm)."})
    dataset: Optional[str] = field(
        default=ACLSUM_QA,
        metadata={
            "help": f"{ACLSUM_QA} (packaged, offline; not SQuAD), a Hub name (rajpurkar/squad, rajpurkar/squad_v2), "
            "a local jsonl/parquet, or SQuAD's nested JSON files."
        },
    )
    dataset_config: Optional[str] = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    question_column: str = field(default="question", metadata={"help": "Column holding the question."})
    context_column: str = field(default="context", metadata={"help": "Column holding the context."})
    answers_column: str = field(
        default="answers", metadata={"help": "Column holding the answers ({text: [...], answer_start: [...]})."}
    )
    id_column: str = field(default="id", metadata={"help": "Column holding each question's id."})
    max_length: int = field(
        default=384, metadata={"help": "Tokens per window: question + context piece + special tokens."}
    )
    doc_stride: int = field(
        default=128, metadata={"help": "Context tokens shared by consecutive windows of a long context."}
    )
    n_best_size: int = field(default=20, metadata={"help": "Best starts x best ends searched per window."})
    max_answer_length: int = field(default=30, metadata={"help": "The longest answer predicted, in tokens."})
    null_score_diff_threshold: float = field(
        default=0.0,
        metadata={"help": "SQuAD 2.0 data: predict no answer when null score - best span score exceeds this."},
    )
    max_train_samples: Optional[int] = field(
        default=None, metadata={"help": "Train on the first N (shuffled) questions."}
    )
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Validate on the first N questions."})
    max_test_samples: Optional[int] = field(
        default=None,
        metadata={"resume": "may_change", "help": "Test on the first N questions (default: the whole test split)."},
    )
    scratch_learning_rate: float = field(default=5e-4, metadata={"help": "Learning rate of the from-scratch model."})
    scratch_layers: int = field(default=4, metadata={"help": "Encoder blocks of the from-scratch model."})
    scratch_d_model: int = field(default=256, metadata={"help": "Width of the from-scratch model."})

    def __post_init__(self):
        super().__post_init__()
        if self.max_length < 8:
            raise UserError(f"--max_length must be at least 8, got {self.max_length}")
        if self.doc_stride < 0:
            raise UserError(f"--doc_stride must be 0 or more, got {self.doc_stride}")
        for name in ("n_best_size", "max_answer_length"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_train_samples", "max_eval_samples", "max_test_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1 (or left unset), got {getattr(self, name)}")


# ---- data ---------------------------------------------------------------------------------------------------


def build_data(config: QuestionAnsweringConfig):
    """train / validation / test with id, question, context, answers; version_2 detected; notes."""
    if not config.dataset:
        raise UserError(
            f"no dataset given: pass --dataset {ACLSUM_QA} (packaged), rajpurkar/squad (the Hub), a jsonl/parquet "
            "file with question/context/answers, or SQuAD's JSON files"
        )
    data = load_qa(
        config.dataset,
        seed=config.seed,
        dataset_config=config.dataset_config,
        question_column=config.question_column,
        context_column=config.context_column,
        answers_column=config.answers_column,
        id_column=config.id_column,
    )
    data = kit.limit_samples(data, config)
    if config.max_test_samples:  # the first N, as finetune evaluate repeats it (finetune/tasks/runs.py)
        test = data.splits["test"]
        data.splits["test"] = test.select(range(min(config.max_test_samples, len(test))))
    return data


# ---- models -------------------------------------------------------------------------------------------------


def build_pretrained(config: QuestionAnsweringConfig):
    """The pretrained checkpoint with a fresh span head (qa_outputs; LoRA-wrapped with --lora), its tokenizer, and
    a note naming the weights the checkpoint did not have."""
    from transformers import AutoModelForQuestionAnswering

    source = resolve(config.model)
    tokenizer = load_tokenizer(source)
    model, info = load_pretrained(
        AutoModelForQuestionAnswering.from_pretrained, source, "model", output_loading_info=True
    )
    new = sorted(info.get("missing_keys", []))
    note = f"new (randomly initialised) weights of {type(model).__name__}: {', '.join(new) or 'none'}"
    check_fits(model, config.max_length, "--max_length")
    if config.lora:  # adapters on the attention's query/value; the new span head stays fully trainable and is saved
        # Not PEFT's task type QUESTION_ANS: peft 0.21's PeftModelForQuestionAnswering.forward drops token_type_ids,
        # so BERT would train without its segment ids and the saved adapter, merged, would answer differently
        # (seen: test F1 5.37 in training, 3.24 from the saved run). The plain PeftModel passes every input on;
        # adapter_config.json then names the base class (auto_mapping), which finetune.models.lora reloads.
        model = apply_lora(model, config, None, base_path=source.path)
    if config.freeze_base:  # a linear probe: what the pretrained features alone are worth
        freeze_base(model)
        note += f"; {probe_note(model)}"
    return model, tokenizer, source, note


def build_scratch(config: QuestionAnsweringConfig, tokenizer):
    """The teaching transformer with a span head (finetune.models.scratch), same tokenizer, randomly initialised.
    With --scratch_init, run() then copies a `finetune pretrain mlm` run's embeddings and encoder into it (the
    segment embedding and the span head stay new: finetune.models.scratch_init)."""
    # here: it imports transformers' modelling code (~2 s), needed only when a scratch model is built
    from finetune.models.scratch import ScratchTransformerForQuestionAnswering

    scratch_config = kit.scratch_config(
        registry.get(TASK).pipeline_tag,
        config.scratch_d_model,
        config.scratch_layers,
        vocab_size=len(tokenizer),
        max_position_embeddings=max(512, config.max_length),
        pad_token_id=tokenizer.pad_token_id,
    )
    return ScratchTransformerForQuestionAnswering(scratch_config)


# ---- the recipe ---------------------------------------------------------------------------------------------


def write_predictions(folder: Path, outputs: dict, version_2: bool) -> None:
    """The test split's answers as run_qa writes them: predictions.json {id: text}, nbest_predictions.json
    {id: [{text, start, end, score, probability}, ...]}, and on v2 data no_answer_probability.json {id: p}."""
    if not engine.process_state().is_main_process:
        return
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "predictions.json", outputs["predictions"])
    atomic_write_json(folder / "nbest_predictions.json", outputs["nbest"])
    if version_2:
        atomic_write_json(folder / "no_answer_probability.json", outputs["no_answer_probability"])


@kit.holds_run_dir
def run(config: QuestionAnsweringConfig) -> dict:
    import dataclasses

    from accelerate.utils import set_seed

    state = kit.start_run(config)
    data = build_data(config)
    set_seed(config.seed)  # before the model is built: the new head's initialisation is part of the run
    model, tokenizer, source, new_weights = build_pretrained(config)
    windows, table, window_notes = make_windows(data.splits, tokenizer, config.max_length, config.doc_stride)
    pretraining = check_pretraining_run(config, tokenizer)  # --scratch_init, checked before any write
    run_dir = kit.open_run_dir(config, state, [source.note, new_weights, data.provenance.note, *data.notes])
    for note in window_notes:
        state.print(f"- {note}")
    loaders = make_loaders(windows, tokenizer, config.batch_size, config.eval_batch_size, config.seed)

    evaluator = QuestionAnsweringEvaluator(
        {name: split for name, split in data.splits.items() if name != "train"},
        table,
        data.version_2,
        config.max_length,
        config.n_best_size,
        config.max_answer_length,
        config.null_score_diff_threshold,
    )
    results = {
        **kit.results_header(TASK, config, source, data.provenance, METRIC_FOR_BEST),
        "version_2": data.version_2,
        "metric": "squad_v2" if data.version_2 else "squad",
        "windows": {name: len(split) for name, split in windows.items()},
        "models": [],
    }

    # 1. The pretrained model, fine-tuned (--skip_pretrained: only the scratch model below, a study's scratch arm).
    if not config.skip_pretrained:
        trained = engine.train(
            model, loaders, evaluator, config, run_dir, name="pretrained", metric_for_best=METRIC_FOR_BEST
        )
        save_run_model(trained, tokenizer, run_dir)  # the full model, or with --lora the adapter (finetune merge)
        write_predictions(run_dir, trained.test_outputs, data.version_2)
        results["models"].append(report.model_entry("pretrained", source.label, source.origin, ".", trained))

    # 2. The from-scratch transformer: same windows, same tokenizer, same number of steps and batch size.
    if config.compare:
        set_seed(config.seed)
        scratch = build_scratch(config, tokenizer)
        init = start_from(scratch, pretraining, state.print)  # --scratch_init: embeddings and encoder pretrained
        scratch_config = dataclasses.replace(config, learning_rate=config.scratch_learning_rate)
        trained_scratch = engine.train(
            scratch, loaders, evaluator, scratch_config, run_dir, name="scratch", metric_for_best=METRIC_FOR_BEST
        )
        save_model(trained_scratch, tokenizer, run_dir / "scratch")
        write_predictions(run_dir / "scratch", trained_scratch.test_outputs, data.version_2)
        results["models"].append(report.scratch_entry(trained_scratch, initialised_from=init))

    kit.finish_run(
        run_dir,
        config,
        results,
        f"(results.json, predictions.json, nbest_predictions.json, learning_curves.png; ask the model: finetune "
        f'predict {run_dir} --question "What is the outcome of the paper?" --context "...")',
    )
    return results


def main(argv=None) -> int:
    return kit.main(QuestionAnsweringConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
