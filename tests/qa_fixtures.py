"""TEST FIXTURES, synthetic: short English paragraphs from templates about people, places and companies, with
SQuAD-shaped questions on them. Nothing here is a real corpus; the pattern (find the sentence about the person the
question names, answer with the place or company in it) is one a small model can learn in seconds.

Test paragraphs use names that never occur in training, so a model must read the question and the context (or,
pretrained, know that "Lisbon" is a place): that is where the pretrained model should beat the one from scratch.
Paragraphs carry filler sentences so that many of them are longer than one window at the tests' --max_length.
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
PLACES_TRAIN = ["Paris", "Berlin", "Madrid", "Tokyo", "Chicago", "Toronto", "Sydney", "Vienna", "Cairo", "Rome"]
PLACES_TEST = ["Lisbon", "Dublin", "Warsaw", "Nairobi", "Boston", "Oslo"]
ORGS_TRAIN = ["Siemens", "Google", "Toyota", "Reuters", "Microsoft", "Nestle"]
ORGS_TEST = ["Volvo", "Amazon", "Samsung", "Nokia"]
FILLER = [
    "The weather was cold on Monday and many trains were late.",
    "A new bridge over the river opened after three years of work.",
    "Local shops reported good sales during the holiday season.",
    "The museum will show old maps and paintings until spring.",
    "Schools in the region start one week later this year.",
]
FACTS = {  # sentence template, question template, what the answer is
    "born": ("{PER} was born in {LOC}.", "Where was {PER} born?", "LOC"),
    "works": ("{PER} works for {ORG}.", "Which company does {PER} work for?", "ORG"),
    "lives": ("{PER} lives in {LOC}.", "Where does {PER} live?", "LOC"),
}


def paragraphs(n, seed, persons, places, orgs, unanswerable=0.0, fillers=3):
    """n paragraphs, each with facts about three people and `fillers` filler sentences, and one question per fact;
    with `unanswerable` > 0, that share of the questions ask about a person absent from the paragraph (SQuAD 2.0)."""
    rng = random.Random(seed)
    out = []
    for p in range(n):
        people = rng.sample(persons, 4)
        present, absent = people[:3], people[3]
        sentences, questions = [], []
        for person in present:
            kind = rng.choice(sorted(FACTS))
            sentence, question, slot = FACTS[kind]
            answer = rng.choice(places if slot == "LOC" else orgs)
            sentences.append((sentence.format(PER=person, LOC=answer, ORG=answer), answer))
            questions.append((question.format(PER=person), answer))
        for filler in rng.sample(FILLER, fillers):
            sentences.insert(rng.randrange(len(sentences) + 1), (filler, None))
        context, starts = "", {}
        for sentence, answer in sentences:
            if answer is not None:
                starts[answer] = len(context) + sentence.index(answer)
            context += sentence + " "
        context = context.strip()
        for q, (question, answer) in enumerate(questions):
            if rng.random() < unanswerable:
                kind = rng.choice(sorted(FACTS))
                out.append(
                    {
                        "id": f"{seed}-{p}-{q}",
                        "question": FACTS[kind][1].format(PER=absent),
                        "context": context,
                        "answers": {"text": [], "answer_start": []},
                    }
                )
            else:
                out.append(
                    {
                        "id": f"{seed}-{p}-{q}",
                        "question": question,
                        "context": context,
                        "answers": {"text": [answer], "answer_start": [starts[answer]]},
                    }
                )
    return out


def splits(train=60, test=20, unanswerable=0.0, fillers=3):
    """train / validation / test rows: train names in train and validation, unseen names in test."""
    return {
        "train": paragraphs(train, 1, PERSONS_TRAIN, PLACES_TRAIN, ORGS_TRAIN, unanswerable, fillers),
        "validation": paragraphs(max(2, train // 6), 2, PERSONS_TRAIN, PLACES_TRAIN, ORGS_TRAIN, unanswerable, fillers),
        "test": paragraphs(test, 3, PERSONS_TEST, PLACES_TEST, ORGS_TEST, unanswerable, fillers),
    }


def write_jsonl_folder(folder, **kwargs):
    """train.jsonl / validation.jsonl / test.jsonl in SQuAD's flat shape."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in splits(**kwargs).items():
        with open(folder / f"{name}.jsonl", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    return folder


def nested(rows, version):
    """Rows -> SQuAD's own file shape: data -> paragraphs -> qas (v2: is_impossible)."""
    by_context = {}
    for row in rows:
        by_context.setdefault(row["context"], []).append(row)
    qas_of = lambda rows: [
        {
            "id": r["id"],
            "question": r["question"],
            "answers": [
                {"text": t, "answer_start": s} for t, s in zip(r["answers"]["text"], r["answers"]["answer_start"])
            ],
            **({"is_impossible": not r["answers"]["text"]} if version == "v2.0" else {}),
        }
        for r in rows
    ]
    paragraphs = [{"context": c, "qas": qas_of(rs)} for c, rs in by_context.items()]
    return {"version": version, "data": [{"title": "fixture", "paragraphs": paragraphs}]}


def write_nested_folder(folder, version="v2.0", **kwargs):
    """train-VERSION.json and dev-VERSION.json as SQuAD distributes them (dev becomes the test split)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = splits(**kwargs)
    (folder / f"train-{version}.json").write_text(json.dumps(nested(rows["train"], version)))
    (folder / f"dev-{version}.json").write_text(json.dumps(nested(rows["test"], version)))
    return folder
