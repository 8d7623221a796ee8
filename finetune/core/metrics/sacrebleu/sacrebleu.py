"""Corpus BLEU and chrF, computed by the `sacrebleu` package (Post 2018), with the signatures that say how.

BLEU (Papineni et al. 2002): the geometric mean of clipped 1..4-gram precisions over the whole corpus, times a
brevity penalty; sacreBLEU tokenizes the detokenized text itself (13a, as WMT's mteval did), so scores are
comparable across papers only with the same signature, which is returned beside each score to be printed.
chrF (Popović 2015): the character n-gram F-score (n up to 6, recall weighted by beta = 2), kinder to morphology
and to near-misses than BLEU. Both on 0..100, one reference per prediction.

Self-contained (no finetune imports), so it also loads as a plain `evaluate` module by path.
"""

import datasets
import evaluate
from sacrebleu.metrics import BLEU, CHRF


class SacreBLEU(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus BLEU and chrF by sacrebleu, with their signatures.",
            citation="Post 2018 (sacreBLEU); Papineni et al. 2002 (BLEU); Popović 2015 (chrF).",
            inputs_description="predictions: list of str (detokenized outputs); references: list of str, one per "
            "prediction; tokenize: sacrebleu's BLEU tokenizer ('13a', 'intl', 'zh', 'char', 'none', ...); "
            "lowercase: bool",
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, tokenize="13a", lowercase=False):
        bleu = BLEU(tokenize=tokenize, lowercase=lowercase)
        chrf = CHRF(lowercase=lowercase)
        refs = [list(references)]  # sacrebleu takes reference *streams*: one list per reference set
        b = bleu.corpus_score(list(predictions), refs)
        c = chrf.corpus_score(list(predictions), refs)
        return {
            "bleu": b.score,
            "chrf": c.score,
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()),
            "bleu_precisions": list(b.precisions),  # 1..4-gram precisions, %
            "bleu_brevity_penalty": b.bp,
            "sys_len": b.sys_len,
            "ref_len": b.ref_len,
        }
