"""Question answering inputs: each (question, context) pair becomes one or more token windows, as run_qa does it.

A context longer than fits beside its question is cut into overlapping windows ("only_second": the question is
never truncated, only the context). Each window is `[CLS] question [SEP] context piece [SEP]` (for BERT), at most
--max_length tokens; consecutive windows share --doc_stride context tokens, so an answer cut by one window's edge is
whole in the next. The tokenizer does the cutting (return_overflowing_tokens) and says which example each window
came from (overflow_to_sample_mapping) and where each token sits in the text (offset_mapping).

    training windows     start_positions / end_positions: the answer's first and last token when the window holds
                         the WHOLE answer, else the [CLS] position (0). A window that holds only part of the answer
                         is labelled CLS too: it cannot point at the answer. On SQuAD v1-style data (every question
                         answered) windows without the answer still train on CLS, exactly as run_qa does; the
                         postprocessing never predicts "no answer" for such data (finetune.core.qa_spans).
    evaluation windows   `window_id` (a number unique over all evaluation splits) and nothing else beyond the model's
                         inputs; the table `EvalWindows` keeps, per window, its split, its example and the character
                         offsets of its context tokens (None elsewhere), which the postprocessing maps spans back to.

Checks (one line each): a question that leaves no room for context in --max_length, and a --doc_stride that is not
smaller than the room left for the context (the tokenizer could never move forward).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from finetune.core.errors import UserError
from finetune.data.sampling import LengthGroupedBatchSampler


@dataclass
class EvalWindows:
    """Per evaluation window (indexed by window_id): split name, example index in that split, context offsets."""

    split: list[str] = field(default_factory=list)
    example: list[int] = field(default_factory=list)
    offsets: list[list[Optional[tuple[int, int]]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.split)


def context_first(tokenizer) -> bool:
    """Tokenizers that pad on the left (XLNet) want the context first; BERT's want the question first."""
    return tokenizer.padding_side == "left"


def encode_pairs(tokenizer, questions, contexts, max_length: int, doc_stride: int, **kwargs):
    """The one tokenizer call of training, evaluation and prediction: windows with offsets and example mapping."""
    questions = [q.lstrip() for q in questions]  # SQuAD v2 has questions opening with many spaces: they only waste room
    first, second = (contexts, questions) if context_first(tokenizer) else (questions, contexts)
    return tokenizer(
        first,
        second,
        truncation="only_first" if context_first(tokenizer) else "only_second",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        **kwargs,
    )


def special_tokens_in_pair(tokenizer) -> int:
    return tokenizer.num_special_tokens_to_add(pair=True)


def check_room(tokenizer, splits, max_length: int, doc_stride: int) -> int:
    """The context room left beside the longest question; one line if there is none or the stride cannot advance."""
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(
            "question answering needs a fast (Rust) tokenizer for the character offsets of each token: use a model "
            "whose folder has a tokenizer.json"
        )
    if doc_stride < 0:
        raise UserError(f"--doc_stride must be 0 or more, got {doc_stride}")
    longest, which = 0, None
    for name, split in splits.items():
        lengths = [
            len(ids)
            for ids in tokenizer([q.lstrip() for q in split["question"]], add_special_tokens=False)["input_ids"]
        ]
        for i, n in enumerate(lengths):
            if n > longest:
                longest, which = n, (name, split[i]["id"] if "id" in split.column_names else i)
    room = max_length - longest - special_tokens_in_pair(tokenizer)
    if room <= 0:
        raise UserError(
            f"the {which[0]} question {which[1]!r} is {longest} tokens long and leaves no room for its context in "
            f"--max_length {max_length}: raise --max_length (or shorten that question)"
        )
    if doc_stride >= room:
        raise UserError(
            f"--doc_stride {doc_stride} is not smaller than the {room} tokens left for the context beside the longest "
            f"question ({longest} tokens) in --max_length {max_length}: lower --doc_stride below {room} or raise "
            "--max_length"
        )
    return room


def context_offsets(encoding, i: int, context_id: int) -> list[Optional[tuple[int, int]]]:
    """Window i's character offsets, None for every token outside the context (question, specials, padding)."""
    sequence_ids = encoding.sequence_ids(i)
    return [tuple(o) if s == context_id else None for o, s in zip(encoding["offset_mapping"][i], sequence_ids)]


def answer_tokens(offsets: list[Optional[tuple[int, int]]], start_char: int, end_char: int) -> tuple[int, int]:
    """The first and last token of the answer [start_char, end_char) if the window holds all of it, else (0, 0).

    (0 is the [CLS] position: "the answer is not here".)"""
    inside = [i for i, o in enumerate(offsets) if o is not None]
    if not inside or offsets[inside[0]][0] > start_char or offsets[inside[-1]][1] < end_char:
        return 0, 0
    start = next(i for i in inside if offsets[i][1] > start_char)  # the token the answer's first character is in
    end = next(i for i in reversed(inside) if offsets[i][0] < end_char)  # ... and its last character
    return start, end


def train_windows(split, tokenizer, max_length: int, doc_stride: int):
    """Training windows with start/end positions (CLS where the window does not hold the whole answer)."""
    context_id = 0 if context_first(tokenizer) else 1

    def encode(batch):
        enc = encode_pairs(tokenizer, batch["question"], batch["context"], max_length, doc_stride)
        enc["start_positions"], enc["end_positions"], enc["length"] = [], [], []
        for i, example in enumerate(enc.pop("overflow_to_sample_mapping")):
            offsets = context_offsets(enc, i, context_id)
            answers = batch["answers"][example]
            if answers["text"]:  # the first answer, as run_qa (SQuAD train has one per question)
                start_char = answers["answer_start"][0]
                start, end = answer_tokens(offsets, start_char, start_char + len(answers["text"][0]))
            else:  # unanswerable (SQuAD v2): CLS
                start, end = 0, 0
            enc["start_positions"].append(start)
            enc["end_positions"].append(end)
            enc["length"].append(len(enc["input_ids"][i]))
        enc.pop("offset_mapping")
        return enc

    return split.map(encode, batched=True, remove_columns=split.column_names, desc="windows")


def eval_windows(split, split_name: str, tokenizer, max_length: int, doc_stride: int, table: EvalWindows):
    """Evaluation windows numbered from len(table) on; their split, example and offsets appended to `table`."""
    context_id = 0 if context_first(tokenizer) else 1
    enc = encode_pairs(tokenizer, list(split["question"]), list(split["context"]), max_length, doc_stride)
    rows = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    if "token_type_ids" in enc:
        rows["token_type_ids"] = enc["token_type_ids"]
    rows["window_id"] = list(range(len(table), len(table) + len(enc["input_ids"])))
    rows["length"] = [len(ids) for ids in enc["input_ids"]]
    for i, example in enumerate(enc["overflow_to_sample_mapping"]):
        table.split.append(split_name)
        table.example.append(example)
        table.offsets.append(context_offsets(enc, i, context_id))
    from datasets import Dataset

    return Dataset.from_dict(rows)


def make_windows(splits, tokenizer, max_length: int, doc_stride: int):
    """train -> labelled windows; validation / test -> numbered windows and their EvalWindows table; and notes."""
    from datasets import DatasetDict

    check_room(tokenizer, splits, max_length, doc_stride)
    table, windows, notes = EvalWindows(), {}, []
    for name, split in splits.items():
        if name == "train":
            windows[name] = train_windows(split, tokenizer, max_length, doc_stride)
            answered = sum(1 for s in windows[name]["start_positions"] if s)
            notes.append(
                f"train: {len(split)} questions -> {len(windows[name])} windows of at most {max_length} tokens "
                f"(--doc_stride {doc_stride} tokens shared); {answered} hold their answer, the others learn the "
                "[CLS] position (no answer here)"
            )
        else:
            windows[name] = eval_windows(split, name, tokenizer, max_length, doc_stride, table)
            notes.append(f"{name}: {len(split)} questions -> {len(windows[name])} windows")
    return DatasetDict(windows), table, notes


def make_loaders(windows, tokenizer, batch_size: int, eval_batch_size: int, seed: int):
    """Train: length-grouped random batches; evaluation: longest first (window_id keeps the order irrelevant)."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    loaders = {}
    for name, split in windows.items():
        train = name == "train"
        sampler = LengthGroupedBatchSampler(
            split["length"], batch_size if train else eval_batch_size, seed=seed, shuffle=train
        )
        loaders[name] = DataLoader(
            split.remove_columns(["length"]),
            batch_sampler=sampler,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(seed),  # private RNG: see finetune/data/text.py
        )
    return loaders
