"""The sacrebleu and rouge evaluate modules against the sacrebleu and rouge_score packages called directly on the same
outputs: real sentences of the packaged CoNLL-2003 articles, with an empty prediction among them."""

import random
import re

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from finetune.core.metrics import greater_is_better, load_metric
from finetune.core.metrics.rouge.rouge import split_sentences
from finetune.data import headlines, packaged


@pytest.fixture(scope="module")
def articles():
    """(headline, [body sentences]) of the CoNLL-2003 test and validation articles, detokenized; CoNLL's own
    sentence boundaries, the truth for sentence splitting."""
    out = []
    for name in ("test.txt", "valid.txt"):
        for document in headlines.read_documents(packaged.conll2003_folder() / name):
            pair = headlines.headline_and_body(document)
            if pair:
                out.append((headlines.detokenize(pair[0][:-1]), [headlines.detokenize(s) for s in pair[1]]))
    return out


@pytest.fixture(scope="module")
def clean_sentences(articles):
    """Body sentences that are whole sentences by any reading: a capital first, `.?!` last, a long last word (not
    an abbreviation or an initial, where the truth itself is ambiguous), balanced quotes, five words or more;
    CoNLL splits some wire-layout lines (tables, `Results of the World Cup` / `freestyle skiing ...`) elsewhere."""
    found = []
    for _, body in articles:
        for sentence in body:
            words = sentence.split()
            if (
                len(words) >= 5
                and sentence[0].isupper()
                and sentence[-1] in ".?!"
                and len(re.sub(r"\W", "", words[-1])) > 3
                and "." not in words[-1][:-1]
                and sentence.count('"') % 2 == 0
            ):
                found.append(sentence)
    random.Random(0).shuffle(found)
    return found


def drop_words(text: str, rng: random.Random, rate: float = 0.25) -> str:
    """A near-miss output: some words of a real sentence dropped (the first and last kept)."""
    words = text.split()
    kept = [w for i, w in enumerate(words) if i in (0, len(words) - 1) or rng.random() > rate]
    return " ".join(kept)


@pytest.mark.parametrize("tokenize,lowercase", [("13a", False), ("intl", True)])
def test_sacrebleu_module_matches_sacrebleu(articles, tokenize, lowercase):
    rng = random.Random(1)
    references = [headline for headline, _ in articles[:80]]
    # a copy-like output (the first body sentence), a near miss (the headline with words dropped), an empty one
    predictions = [body[0] if i % 2 else drop_words(headline, rng) for i, (headline, body) in enumerate(articles[:80])]
    predictions[3] = ""
    ours = load_metric("sacrebleu").compute(
        predictions=predictions, references=references, tokenize=tokenize, lowercase=lowercase
    )
    bleu = sacrebleu.corpus_bleu(predictions, [references], tokenize=tokenize, lowercase=lowercase)
    case = str.lower if lowercase else str  # (corpus_chrf has no lowercase flag: lowercase the texts instead)
    chrf = sacrebleu.corpus_chrf([case(p) for p in predictions], [[case(r) for r in references]])
    assert 5 < ours["bleu"] < 95 and ours["bleu"] == pytest.approx(bleu.score)
    assert ours["chrf"] == pytest.approx(chrf.score)
    assert ours["bleu_precisions"] == pytest.approx(bleu.precisions)
    assert (ours["sys_len"], ours["ref_len"]) == (bleu.sys_len, bleu.ref_len)
    assert f"tok:{tokenize}" in ours["bleu_signature"] and f"version:{sacrebleu.__version__}" in ours["bleu_signature"]
    assert ("case:lc" if lowercase else "case:mixed") in ours["chrf_signature"]


def test_sacrebleu_module_on_empty_outputs(articles):
    references = [headline for headline, _ in articles[:5]]
    ours = load_metric("sacrebleu").compute(predictions=[""] * 5, references=references)
    assert ours["bleu"] == sacrebleu.corpus_bleu([""] * 5, [references]).score == 0.0
    assert ours["chrf"] == pytest.approx(sacrebleu.corpus_chrf([""] * 5, [references]).score)


def test_rouge_module_matches_rouge_score(clean_sentences, articles):
    """ROUGE-1/2/L exactly; ROUGE-Lsum on flat outputs (our rule splits the sentences) against rouge_score given
    CoNLL's own sentence boundaries as newlines."""
    rng = random.Random(2)
    groups = [clean_sentences[i : i + 3] for i in range(0, 120, 3)]  # 40 references of three real sentences
    predicted = [[drop_words(s, rng) for s in group[:2]] + [groups[(i + 1) % 40][2]] for i, group in enumerate(groups)]
    predicted[5] = [""]  # an empty output
    # and one-line pairs: a headline against its article's first sentence
    groups += [[body[0]] for _, body in articles[:20]]
    predicted += [[headline] for headline, _ in articles[:20]]

    ours = load_metric("rouge").compute(
        predictions=[" ".join(p) for p in predicted], references=[" ".join(g) for g in groups]
    )
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    scores = [scorer.score("\n".join(g), "\n".join(p)) for g, p in zip(groups, predicted)]
    expected = {name: sum(s[name].fmeasure for s in scores) / len(scores) for name in scores[0]}
    assert scores[5]["rouge1"].fmeasure == 0.0
    for name in ("rouge1", "rouge2", "rougeL"):
        assert ours[name] == pytest.approx(expected[name], abs=1e-12)
    assert 0.2 < ours["rougeLsum"] < 0.9
    assert ours["rougeLsum"] == pytest.approx(expected["rougeLsum"], abs=0.005)
    # text that already has one sentence per line is read line by line: then Lsum is rouge_score's exactly
    lines = load_metric("rouge").compute(
        predictions=["\n".join(p) for p in predicted], references=["\n".join(g) for g in groups]
    )
    assert lines["rougeLsum"] == pytest.approx(expected["rougeLsum"], abs=1e-12)


def test_split_sentences_agrees_with_conll(clean_sentences):
    groups = [clean_sentences[i : i + 3] for i in range(0, len(clean_sentences) - 2, 3)]
    agree = sum(split_sentences(" ".join(group)) == group for group in groups)
    assert len(groups) > 500 and agree / len(groups) > 0.98
    assert split_sentences('Mr. Smith met U.S. officials. "We won," he said. J. R. R. Tolkien left.\nNew line') == [
        "Mr. Smith met U.S. officials.",
        '"We won," he said.',
        "J. R. R. Tolkien left.",
        "New line",
    ]
    assert split_sentences("") == [""]


def test_seq2seq_metrics_are_maximised():
    assert all(greater_is_better(name) for name in ("bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum"))
