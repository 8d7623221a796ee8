"""ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum F-measures, computed by Google's `rouge_score` package (Lin 2004).

ROUGE-N counts the n-grams a summary shares with the reference; ROUGE-L the longest common subsequence of the
two texts as wholes; ROUGE-Lsum ("summary-level" LCS) the union of LCS matches sentence by sentence, so it needs
the sentences, which rouge_score reads one per line. Outputs are usually one line, so `split_sentences` puts
each sentence on its own line first, by rule (no nltk data to download); a text that already has newlines is
taken as one sentence per line. Porter stemming on (`use_stemmer`, as the CNN/DailyMail and XSum papers report),
scores are the mean F-measure over examples, on 0..1.

Self-contained (no finetune imports), so it also loads as a plain `evaluate` module by path.
"""

import re

import datasets
import evaluate
from rouge_score import rouge_scorer

TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# Words whose full stop does not end a sentence: titles, initials' companions and short forms common in news.
ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "st", "sr", "jr", "gen", "col", "lt", "sgt", "capt", "gov", "sen", "rep",
    "rev", "no", "vs", "etc", "inc", "ltd", "co", "corp", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
    "sept", "oct", "nov", "dec", "mt", "ft", "approx",
}  # fmt: skip
_END = re.compile(r"""[.!?]+["'”’)\]]*(?=\s+["'“‘(\[]?[A-Z0-9])""")


def split_sentences(text: str) -> list[str]:
    """A text -> its sentences, by rule.

    A sentence ends at . ! or ? (and any closing quotes or brackets after it) followed by space and a capital
    letter, a digit or an opening quote, unless the full stop ends an abbreviation (Mr. Smith, Gov. Bush), an
    initial (J. R. R. Tolkien) or letters with full stops between them (U.S. officials, the F.A. Cup).
    Newlines already in the text separate sentences too.
    """
    sentences = []
    for line in text.splitlines():
        start = 0
        for match in _END.finditer(line):
            word = line[start : match.start()].split()[-1:] or [""]
            token = word[0].lstrip("\"'“‘([").lower().split("-")[-1]  # then-U.S. -> u.s
            if match.group().startswith(".") and (token in ABBREVIATIONS or re.fullmatch(r"[a-z](\.[a-z])*", token)):
                continue
            sentences.append(line[start : match.end()].strip())
            start = match.end()
        sentences.append(line[start:].strip())
    return [s for s in sentences if s] or [""]


class Rouge(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE-1/2/L/Lsum mean F-measure by rouge_score, with stemming.",
            citation="Lin 2004 (ROUGE); the rouge_score package (Google Research).",
            inputs_description="predictions: list of str; references: list of str, one per prediction; "
            "use_stemmer: bool (default True)",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, use_stemmer=True):
        scorer = rouge_scorer.RougeScorer(list(TYPES), use_stemmer=use_stemmer)
        totals = dict.fromkeys(TYPES, 0.0)
        for prediction, reference in zip(predictions, references):
            # rougeLsum reads sentences one per line; the other types ignore the newlines
            scores = scorer.score("\n".join(split_sentences(reference)), "\n".join(split_sentences(prediction)))
            for name in TYPES:
                totals[name] += scores[name].fmeasure
        count = max(len(predictions), 1)
        return {name: total / count for name, total in totals.items()}
