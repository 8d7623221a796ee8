"""Translation: fine-tune an encoder-decoder, and compare it with the 2017 paper's transformer trained from scratch.

    finetune train translation                         # offline: KJV -> WEB verses, BERT2BERT warm-started from MiniLM
    finetune train translation --model Helsinki-NLP/opus-mt-en-ro --dataset wmt16 --dataset_config ro-en \\
        --source_lang en --target_lang ro
    finetune train translation --model t5-small --source_prefix "translate English to French: " \\
        --dataset opus_books --dataset_config en-fr --source_lang en --target_lang fr
    finetune predict runs/translation "Thou shalt not kill."

Any AutoModelForSeq2SeqLM works by Hub name or folder (T5 with its task prefix --source_prefix, BART, Marian,
mBART/M2M with --forced_bos_token). No such weights can be had offline, so the offline default warm-starts an
encoder-decoder from the packaged MiniLM (BERT2BERT: Rothe, Narayan & Severyn 2020): encoder and decoder start from
MiniLM's weights, and only the decoder's cross-attention is new. The run says which weights are which.

What the run reports, on the whole test split: the copy baseline (the source as the output: King James and World
English Bible are close, and a BLEU that does not beat copying means nothing), the fine-tuned model and the
from-scratch model (finetune.models.scratch, same tokenizer, same steps and batch size): BLEU and chrF with the
sacreBLEU signature (ROUGE-1/2/L/Lsum for summarization), the mean output length; predictions_<model>.jsonl; the
cross-attention alignment figure (attention.png / attention.json); results.json, learning_curves.png, the table.

Validation during training: the loss on every validation pair, and BLEU (ROUGE-L) on the first
--generate_eval_samples of them, generated as the test is; that metric picks the best weights (the loss does with
--generate_eval_samples 0). The test is generated in full, batched and sorted by length.

Each step is a function you can call from your own code (recipes/summarization.py is this recipe with other
defaults):

    from recipes.translation import TranslationConfig, build_data, build_pretrained, build_scratch, run
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from finetune.core import engine
from finetune.core.atomic_io import atomic_write_text
from finetune.core.config import TrainingConfig, defaults_from
from finetune.core.errors import UserError
from finetune.core.evaluation import Seq2SeqEvaluator, seq2seq_scores, seq2seq_signature
from finetune.data.pairs import load_pairs
from finetune.data.seq2seq import make_loaders, tokenize_pairs
from finetune.models.loading import count_parameters, save_model
from finetune.models.lora import apply_lora, describe, save_run_model
from finetune.models.seq2seq import (
    cross_attention,
    decode,
    generate_ids,
    generation_kwargs,
    is_uncased,
    load_seq2seq,
    needs_prefix,
)
from finetune.reporting import report
from finetune.reporting.attention import write_alignment_figure
from finetune.reporting.tables import text_table
from finetune.tasks import kit, registry

TASK = "translation"
# The validation metric that picks the best weights (and that finetune search optimises); its direction is
# finetune.core.metrics.greater_is_better's. Registered with the task in finetune/tasks/registry.py.
METRIC_FOR_BEST = registry.get(TASK).metric
FIGURE_EXAMPLES = 3  # test sentences in the cross-attention figure


@defaults_from(Path(__file__).parent / "configs" / "translation.yaml")
@dataclass
class TranslationConfig(kit.HubFields, TrainingConfig):
    hub_example: ClassVar[str] = "your-user/bert2bert-kjv-web"

    model: str = field(
        default="minilm",
        metadata={
            "help": "A seq2seq model (t5-small, facebook/bart-base, Helsinki-NLP/opus-mt-en-ro, a folder), or an "
            "encoder to warm-start one from (minilm, bert-base-uncased: BERT2BERT)."
        },
    )
    decoder_model: Optional[str] = field(
        default=None, metadata={"help": "Warm-start the decoder from this checkpoint instead of --model's."}
    )
    dataset: str = field(
        default="kjv-web",
        metadata={"help": "kjv-web (packaged), a Hub name (wmt16, opus_books), or local jsonl/csv/tsv/parquet."},
    )
    dataset_config: Optional[str] = field(default=None, metadata={"help": "The Hub dataset's configuration (ro-en)."})
    source_column: Optional[str] = field(default=None, metadata={"help": "Column holding the source text."})
    target_column: Optional[str] = field(default=None, metadata={"help": "Column holding the target text."})
    source_lang: Optional[str] = field(
        default=None, metadata={"help": 'Source language key of {"translation": {...}} records (en).'}
    )
    target_lang: Optional[str] = field(
        default=None, metadata={"help": 'Target language key of {"translation": {...}} records (ro).'}
    )
    source_prefix: str = field(
        default="", metadata={"help": "Prepended to every source: T5's 'translate English to Romanian: '."}
    )
    forced_bos_token: Optional[str] = field(
        default=None, metadata={"help": "mBART / M2M100: the target language token the decoder must start with."}
    )
    max_source_length: int = field(default=128, metadata={"help": "Cut sources to this many tokens (counted)."})
    max_target_length: int = field(
        default=128, metadata={"help": "Cut targets to this many tokens (counted); the most tokens generated."}
    )
    num_beams: int = field(
        default=1, metadata={"resume": "may_change", "help": "Beam width of generation (1: greedy, fast on a CPU)."}
    )
    length_penalty: float = field(
        default=1.0, metadata={"resume": "may_change", "help": "Beam search: > 1 favours longer outputs."}
    )
    no_repeat_ngram_size: int = field(
        default=0, metadata={"resume": "may_change", "help": "Never repeat an n-gram of this size (0: allowed)."}
    )
    generate_eval_samples: int = field(
        default=64,
        metadata={"help": "Validation pairs generated at each evaluation for BLEU/ROUGE (0: select on the loss)."},
    )
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Train on the first N (shuffled) pairs."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Validate on the first N pairs."})
    max_test_samples: Optional[int] = field(
        default=None, metadata={"resume": "may_change", "help": "Generate and score the first N test pairs."}
    )
    scratch_learning_rate: float = field(default=5e-4, metadata={"help": "Learning rate of the from-scratch model."})
    scratch_layers: int = field(default=3, metadata={"help": "Encoder and decoder blocks of the from-scratch model."})
    scratch_d_model: int = field(default=256, metadata={"help": "Width of the from-scratch model."})

    def __post_init__(self):
        super().__post_init__()
        if self.num_beams < 1:
            raise UserError(f"--num_beams must be at least 1 (1 is greedy decoding), got {self.num_beams}")
        for name in ("max_source_length", "max_target_length"):
            if getattr(self, name) < 2:
                raise UserError(f"--{name} must be at least 2, got {getattr(self, name)}")
        if self.no_repeat_ngram_size < 0 or self.generate_eval_samples < 0:
            raise UserError("--no_repeat_ngram_size and --generate_eval_samples must be 0 or more")
        if self.length_penalty <= 0:
            raise UserError(f"--length_penalty must be positive, got {self.length_penalty}")
        for name in ("max_train_samples", "max_eval_samples", "max_test_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1 (or left unset), got {getattr(self, name)}")


# ---- data ---------------------------------------------------------------------------------------------------


def build_data(config: TranslationConfig, task: str = TASK):
    """train / validation / test pairs (string columns `source`, `target`), limited as configured."""

    data = load_pairs(
        config.dataset,
        task=task,
        seed=config.seed,
        dataset_config=config.dataset_config,
        source_column=config.source_column,
        target_column=config.target_column,
        source_lang=config.source_lang,
        target_lang=config.target_lang,
    )
    data = kit.limit_samples(data, config)
    if config.max_test_samples:
        test = data.splits["test"]
        data.splits["test"] = test.select(range(min(config.max_test_samples, len(test))))
    return data


# ---- models -------------------------------------------------------------------------------------------------


def build_pretrained(config: TranslationConfig):
    """The seq2seq model (LoRA-wrapped with --lora) and its tokenizer: Seq2SeqModel(model, tokenizer, source, notes)."""

    loaded = load_seq2seq(config.model, config.decoder_model, config.forced_bos_token)
    if needs_prefix(loaded.model) and not config.source_prefix:
        loaded.notes.append(
            f"WARNING: {loaded.source.label} is a T5 model, trained with a task prefix, and --source_prefix is "
            f"empty: pass e.g. --source_prefix 'translate English to Romanian: ' or 'summarize: '"
        )
    if config.lora and loaded.warm_started:
        raise UserError(
            f"--lora adapts a pretrained encoder-decoder (T5, BART, Marian), but {loaded.source.label} is "
            f"warm-started: its cross-attention is new and must be trained in full; drop --lora"
        )
    if config.lora:
        loaded.model = apply_lora(loaded.model, config, "SEQ_2_SEQ_LM", base_path=loaded.source.path)
        loaded.notes.append(describe(loaded.model))
    return loaded


def build_scratch(config: TranslationConfig, tokenizer, pretrained):
    """The 2017 paper's encoder-decoder (finetune.models.scratch), same tokenizer and special tokens as the
    pretrained model, random weights."""
    # here: it imports transformers' modelling code (~2 s), needed only when a scratch model is built
    from finetune.models.scratch import ScratchTransformerForSeq2Seq

    tokens = pretrained.generation_config
    scratch_config = kit.scratch_config(
        "text2text-generation",
        config.scratch_d_model,
        config.scratch_layers,
        n_decoder_layers=config.scratch_layers,
        vocab_size=len(tokenizer),
        max_position_embeddings=max(512, config.max_source_length + 2, config.max_target_length + 2),
        pad_token_id=tokens.pad_token_id,
        eos_token_id=tokens.eos_token_id,
        decoder_start_token_id=tokens.decoder_start_token_id,
    )
    model = ScratchTransformerForSeq2Seq(scratch_config)
    model.generation_config.forced_bos_token_id = tokens.forced_bos_token_id
    return model


# ---- the recipe ---------------------------------------------------------------------------------------------


@kit.holds_run_dir
def run(config: TranslationConfig, task: str = TASK) -> dict:
    import dataclasses

    from accelerate.utils import set_seed

    state = kit.start_run(config)
    data = build_data(config, task)
    set_seed(config.seed)  # before the model is built: the new cross-attention's initialisation is part of the run
    pretrained = build_pretrained(config)
    model, tokenizer = pretrained.model, pretrained.tokenizer
    start = model.generation_config.decoder_start_token_id
    tokenized, cut_notes = tokenize_pairs(
        data.splits, tokenizer, config.max_source_length, config.max_target_length, config.source_prefix, start
    )
    notes = [pretrained.source.note, *pretrained.notes, data.provenance.note, *data.notes, *cut_notes]
    run_dir = kit.open_run_dir(config, state, notes)
    loaders = make_loaders(tokenized, tokenizer, config.batch_size, config.eval_batch_size, config.seed)
    del loaders["test"]  # the test split is generated in full after training (test_generation), not teacher-forced
    state.print(
        f"- {data.source_name} -> {data.target_name}: train {len(tokenized['train'])} / validation "
        f"{len(tokenized['validation'])} / test {len(tokenized['test'])} pairs"
    )

    # Uncased tokenizers (MiniLM) write lower case: then every row, the copy baseline too, is scored in lower case.
    lowercase = is_uncased(tokenizer)
    score = lambda predictions, references: seq2seq_scores(task, predictions, references, lowercase=lowercase)
    metric_for_best = registry.get(task).metric if config.generate_eval_samples else "loss"
    gen_kwargs = generation_kwargs(
        config.max_target_length, config.num_beams, config.length_penalty, config.no_repeat_ngram_size
    )
    sources, references = list(data.splits["test"]["source"]), list(data.splits["test"]["target"])
    results = {
        **kit.results_header(task, config, pretrained.source, data.provenance, metric_for_best),
        "source_name": data.source_name,
        "target_name": data.target_name,
        "generation": {**gen_kwargs, "source_prefix": config.source_prefix, "lowercase_scoring": lowercase},
        "signature": seq2seq_signature(task, lowercase),
        "copy_baseline": {"name": "copy (the source as the output)", "test": rounded(score(sources, references))},
        "models": [],
    }
    if lowercase:
        state.print(f"- {pretrained.source.label}'s tokenizer is uncased: every row is scored in lower case")

    def train(model, name, train_config):
        evaluator = Seq2SeqEvaluator(
            tokenizer,
            generate=lambda batch: model.generate(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **gen_kwargs
            ),
            score=score,
            generate_samples=config.generate_eval_samples,
        )
        return engine.train(
            model, loaders, evaluator, train_config, run_dir, name=name, metric_for_best=metric_for_best
        )

    def test_generation(trained, name: str):
        """Generate the whole test split, score it, write predictions_<name>.jsonl: (ids, texts, test metrics)."""
        ids = generate_ids(
            trained.model,
            tokenizer,
            sources,
            config.max_source_length,
            config.eval_batch_size,
            config.source_prefix,
            **gen_kwargs,
        )
        outputs = decode(tokenizer, ids)
        rows = [{"source": s, "reference": r, "output": o} for s, r, o in zip(sources, references, outputs)]
        atomic_write_text(run_dir / f"predictions_{name}.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
        return ids, outputs, rounded(score(outputs, references))

    # 1. The pretrained (or warm-started) encoder-decoder, fine-tuned.
    trained = train(model, "pretrained", config)
    save_run_model(trained, tokenizer, run_dir)  # the full model, or with --lora the adapter (finetune merge)
    entry = report.model_entry("pretrained", pretrained.source.label, pretrained.source.origin, ".", trained)
    entry["warm_started"] = pretrained.warm_started
    entry["trainable_parameters"] = count_parameters(trained.model, trainable_only=True)
    outputs = {}
    if state.is_main_process:
        ids, outputs["pretrained"], entry["test"] = test_generation(trained, "pretrained")
    results["models"].append(entry)
    models = {"pretrained": (trained.model, ids if state.is_main_process else None)}

    # 2. The from-scratch encoder-decoder: same pairs, same tokenizer, same number of steps and batch size.
    if config.compare:
        set_seed(config.seed)
        scratch = build_scratch(config, tokenizer, trained.model)
        scratch_config = dataclasses.replace(
            config, learning_rate=config.scratch_learning_rate, lora=False, max_steps=config.max_steps or trained.steps
        )
        trained_scratch = train(scratch, "scratch", scratch_config)
        save_model(trained_scratch, tokenizer, run_dir / "scratch")
        scratch_entry = report.scratch_entry(trained_scratch)
        if state.is_main_process:
            scratch_ids, outputs["scratch"], scratch_entry["test"] = test_generation(trained_scratch, "scratch")
            models["scratch"] = (trained_scratch.model, scratch_ids)
        results["models"].append(scratch_entry)

    # 3. Where each output token looked in the source: a few test sentences, every model side by side.
    if state.is_main_process:
        examples = figure_examples(sources, FIGURE_EXAMPLES)
        figure = [
            {
                "source": sources[i],
                "maps": {
                    name: cross_attention(
                        model, tokenizer, sources[i], ids[i], config.max_source_length, config.source_prefix
                    )
                    for name, (model, ids) in models.items()
                },
            }
            for i in examples
        ]
        write_alignment_figure(run_dir, figure)
        results["examples"] = [  # the table's footer: the figure's sentences, every model's output
            {"source": sources[i], "reference": references[i], **{name: outputs[name][i] for name in outputs}}
            for i in examples
        ]

    kit.finish_run(
        run_dir,
        config,
        results,
        table=format_report(results) if state.is_main_process else None,
        where=f"(results.json, predictions_*.jsonl, attention.png; try: finetune predict {run_dir} "
        f'"{sources[0][:60]}")',
    )
    return results


def rounded(scores: dict) -> dict:
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in scores.items()}


def figure_examples(sources: list[str], n: int) -> list[int]:
    """The indices of n short test sources (a heatmap of a long one is unreadable), spread over the split."""
    by_length = sorted(range(len(sources)), key=lambda i: (len(sources[i].split()), i))
    short = sorted(by_length[: max(n, len(sources) // 4)])
    step = max(1, len(short) // n)
    return short[::step][:n]


def format_report(results: dict) -> str:
    """The comparison table with the copy baseline as its first row, then a few test examples side by side."""
    copy = results["copy_baseline"]
    baseline_row = {
        "name": copy["name"],
        "role": "baseline",
        "test": copy["test"],
        "parameters": 0,
        "train_seconds": 0.0,
        "samples_per_second": 0.0,
    }
    lines = [report.format_table({**results, "models": [baseline_row, *results["models"]]})]
    lines += [f"{name} signature: {signature}" for name, signature in results["signature"].items()]
    rows = []
    for example in results.get("examples", []):
        rows += [[key, shorten(str(value), 110)] for key, value in example.items()] + [["", ""]]
    if rows:
        lines.append(text_table(["test example", ""], rows[:-1], align="ll"))
    return "\n".join(lines)


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv=None) -> int:
    return kit.main(TranslationConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
