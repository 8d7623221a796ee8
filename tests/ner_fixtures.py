"""TEST FIXTURES, synthetic: short English sentences from templates, with person / location / organisation names
tagged in IOB2. Nothing here is a real corpus; the entities follow patterns a small model learns in seconds.

Test sentences use names that never occur in training, so a model must read the context (or, pretrained, know
that "Lisbon" is a place): that is where the pretrained model should beat the one trained from scratch.
"""

import json
import random

PERSONS_TRAIN = [
    "Angela Merkel",
    "John Smith",
    "Maria Garcia",
    "David Brown",
    "Anna Petrova",
    "James Wilson",
    "Laura Chen",
    "Peter Novak",
    "Sophie Martin",
    "Carlos Silva",
    "Emma Johnson",
    "Lucas Meyer",
]
PERSONS_TEST = ["Olivia Turner", "Hans Weber", "Yuki Tanaka", "Marco Rossi", "Ingrid Berg", "Rahul Mehta"]
PLACES_TRAIN = ["Paris", "Berlin", "Madrid", "Tokyo", "Chicago", "Toronto", "Sydney", "Vienna", "Cairo", "New York"]
PLACES_TEST = ["Lisbon", "Dublin", "Warsaw", "Nairobi", "Buenos Aires", "Boston"]
ORGS_TRAIN = ["Siemens", "Google", "the United Nations", "Toyota", "Reuters", "Microsoft", "Nestle", "the BBC"]
ORGS_TEST = ["Volvo", "Amazon", "UNESCO", "Samsung"]

TEMPLATES = [
    "{PER} met {PER} in {LOC} .",
    "{PER} works for {ORG} in {LOC} .",
    "{ORG} opened a new office in {LOC} .",
    "Yesterday {PER} flew from {LOC} to {LOC} .",
    "A spokesman for {ORG} said {PER} will visit {LOC} .",
    "{PER} joined {ORG} last year .",
    "The weather in {LOC} was cold on Monday .",
]


def sentences(n, seed, persons, places, orgs):
    """n sentences as (words, IOB2 tags)."""
    rng = random.Random(seed)
    pools = {"PER": persons, "LOC": places, "ORG": orgs}
    out = []
    for _ in range(n):
        words, tags = [], []
        for piece in rng.choice(TEMPLATES).split():
            kind = piece[1:-1] if piece.startswith("{") else None
            if kind is None:
                words.append(piece)
                tags.append("O")
                continue
            name = rng.choice(pools[kind]).split()
            words += name
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1)
        out.append((words, tags))
    return out


def split_sentences(n_train=240, n_test=60, seed=0):
    train = sentences(n_train, seed, PERSONS_TRAIN, PLACES_TRAIN, ORGS_TRAIN)
    validation = sentences(n_test, seed + 1, PERSONS_TEST, PLACES_TEST, ORGS_TEST)
    test = sentences(n_test, seed + 2, PERSONS_TEST, PLACES_TEST, ORGS_TEST)
    return {"train": train, "dev": validation, "test": test}


def write_conll_folder(folder, **kwargs):
    """train.conll / dev.conll / test.conll: `word POS tag` lines (a dummy POS column, so the tag is not column 1),
    -DOCSTART- at the top of each file as in CoNLL-2003."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in split_sentences(**kwargs).items():
        lines = ["-DOCSTART- -X- O", ""]
        for words, tags in rows:
            lines += [f"{w} {'NNP' if t != 'O' else 'X'} {t}" for w, t in zip(words, tags)] + [""]
        (folder / f"{name}.conll").write_text("\n".join(lines) + "\n")
    return folder


def write_jsonl(path, n=300, seed=3):
    """One jsonl file (splits carved by the recipe), columns `tokens` / `ner_tags` with tag names."""
    rows = sentences(n, seed, PERSONS_TRAIN + PERSONS_TEST, PLACES_TRAIN + PLACES_TEST, ORGS_TRAIN + ORGS_TEST)
    path.write_text("".join(json.dumps({"tokens": w, "ner_tags": t}) + "\n" for w, t in rows))
    return path


def tiny_tagger(path, minilm_dir, num_labels=7):
    """A 2-layer, 32-wide BERT token classifier (random weights) with MiniLM's real tokenizer: for loop tests."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForTokenClassification

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=num_labels,
    )
    BertForTokenClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
