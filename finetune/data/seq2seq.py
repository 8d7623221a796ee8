"""Source -> target pairs as tokens and batches, for the encoder-decoder recipes (translation, summarization).

    tokenize_pairs   splits of `source` / `target` strings -> input_ids, attention_mask, labels (and a length), with
                     one note per split saying how many sources and targets were cut to the maximum lengths
    make_loaders     length-grouped batches, sources padded with the pad token, labels with -100
                     (DataCollatorForSeq2Seq): each model shifts its labels right into decoder inputs itself

The pairs themselves come from finetune.data.pairs (Hub, local files, the packaged KJV -> WEB and CoNLL headlines).
"""

from __future__ import annotations

from finetune.data import cache
from finetune.data.sampling import LengthGroupedBatchSampler


def tokenize_pairs(
    splits, tokenizer, max_source_length: int, max_target_length: int, prefix: str = "", decoder_start_token_id=None
):
    """DatasetDict of source/target strings -> (DatasetDict of input_ids, attention_mask, labels, length; notes).

    prefix: prepended to every source (T5's "translate English to German: "). A label sequence that opens with
    the decoder's start token (BERT's [CLS] when [CLS] starts the decoder) loses that token: the decoder is fed
    it as its first input, and must learn to write what follows, not to repeat it.
    Truncation is never silent: each split with a cut source or target adds a note counting them.
    """

    notes = []

    def encode(batch):
        sources = [prefix + text for text in batch["source"]]
        full_sources = tokenizer(sources, add_special_tokens=True)["input_ids"]
        full_labels = tokenizer(text_target=batch["target"], add_special_tokens=True)["input_ids"]
        if decoder_start_token_id is not None:
            full_labels = [ids[1:] if ids and ids[0] == decoder_start_token_id else ids for ids in full_labels]
        encoded = tokenizer(sources, max_length=max_source_length, truncation=True)
        encoded["labels"] = [cut(ids, max_target_length, tokenizer) for ids in full_labels]
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        encoded["source_cut"] = [len(ids) > max_source_length for ids in full_sources]
        encoded["target_cut"] = [len(ids) > max_target_length for ids in full_labels]
        return encoded

    from datasets import DatasetDict

    settings = [cache.tokenizer_key(tokenizer), max_source_length, max_target_length, prefix, decoder_start_token_id]
    tokenized = DatasetDict(
        {
            name: split.map(
                encode,
                batched=True,
                remove_columns=split.column_names,
                new_fingerprint=cache.map_fingerprint(split, *settings),
            )
            for name, split in splits.items()
        }
    )
    for name, split in tokenized.items():
        sources, targets = sum(split["source_cut"]), sum(split["target_cut"])
        if sources or targets:
            notes.append(
                f"{name}: {sources} of {len(split)} sources longer than --max_source_length {max_source_length} "
                f"and {targets} targets longer than --max_target_length {max_target_length} tokens were cut"
            )
    return tokenized.remove_columns(["source_cut", "target_cut"]), notes


def cut(ids: list[int], max_length: int, tokenizer) -> list[int]:
    """The first max_length tokens, keeping the end-of-sequence token last if the sequence had one (the model
    must still learn to stop)."""
    if len(ids) <= max_length:
        return ids
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return ids[: max_length - 1] + [ids[-1]] if end is not None and ids[-1] == end else ids[:max_length]


def make_loaders(tokenized, tokenizer, batch_size: int, eval_batch_size: int, seed: int):
    """As finetune.data.text.make_loaders (length-grouped, seeded, resumable), with labels padded by -100."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import DataCollatorForSeq2Seq

    # No model passed: each model builds its decoder inputs from the labels (T5 / BART / EncoderDecoderModel and
    # the scratch model all shift right with their own start token).
    collate = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, return_tensors="pt")
    loaders = {}
    for name, split in tokenized.items():
        train = name == "train"
        sampler = LengthGroupedBatchSampler(
            split["length"], batch_size if train else eval_batch_size, seed=seed, shuffle=train
        )
        loaders[name] = DataLoader(
            split.remove_columns(["length"]),
            batch_sampler=sampler,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(seed),
        )  # private RNG: see data/text.py
    return loaders
