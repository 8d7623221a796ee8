"""Evaluators: what the engine's evaluation loop collects from each batch, and the metrics it computes.

The engine stays task-free: it runs the model over a loader and hands each (batch, outputs) pair to an
evaluator, together with `gather`, Accelerate's `gather_for_metrics`, which collects the values from every
process and drops the duplicates that even sharding adds to the last batch.

Every evaluator has the same four methods: reset(), add(batch, outputs, gather), compute() -> metrics, and
outputs() -> the last evaluation example by example (after compute()), which the engine returns for the test
split (TrainResult.test_outputs) so that no caller reads what an evaluator was left holding.
An evaluator may name batch keys that are its own bookkeeping (`batch_only`, e.g. QA's window_id): the engine
passes the batch to add() whole and to the model without them.
"""

from __future__ import annotations

import functools

import torch

from finetune.core.metrics import load_metric
from finetune.core.qa_spans import predict_answer


class ClassificationEvaluator:
    """One label per example: accuracy, and F1 (binary for two labels, macro-averaged for more).

    `extra` adds metrics by name: "matthews_correlation" (CoLA), "f1_macro", "f1_micro". The class
    probabilities of the last evaluation are kept (`outputs()`), for calibration and per-class reports.
    """

    def __init__(self, num_labels: int, extra: tuple = ()):
        self.average = "binary" if num_labels == 2 else "macro"
        self.extra = tuple(extra)
        self._metrics = None
        self.reset()

    def reset(self):
        self.predictions, self.references, self.probabilities = [], [], []

    def add(self, batch, outputs, gather):
        logits = outputs.logits.float()  # (B, K)
        predictions, references, probabilities = gather(
            (logits.argmax(dim=-1), batch["labels"], logits.softmax(dim=-1))
        )
        self.predictions.append(predictions.cpu())
        self.references.append(references.cpu())
        self.probabilities.append(probabilities.cpu())

    def outputs(self) -> dict:
        """The last evaluation, example by example: references, predictions (label ids), probabilities (B, K)."""
        return {
            "references": torch.cat(self.references).tolist(),
            "predictions": torch.cat(self.predictions).tolist(),
            "probabilities": torch.cat(self.probabilities).tolist(),
        }

    def compute(self) -> dict:
        if self._metrics is None:
            self._metrics = {name: load_metric(name) for name in ("accuracy", "f1", "matthews_correlation")}
        p = torch.cat(self.predictions).tolist()
        r = torch.cat(self.references).tolist()
        scores = {
            **self._metrics["accuracy"].compute(predictions=p, references=r),
            **self._metrics["f1"].compute(predictions=p, references=r, average=self.average),
        }
        for name in self.extra:
            if name == "matthews_correlation":
                scores.update(self._metrics[name].compute(predictions=p, references=r))
            elif name in ("f1_macro", "f1_micro"):
                scores[name] = self._metrics["f1"].compute(predictions=p, references=r, average=name[3:])["f1"]
            else:
                raise ValueError(f"unknown extra classification metric {name!r}")
        return scores


class MultiLabelEvaluator:
    """Several labels per example (0/1 per label): a label is predicted when its sigmoid passes `threshold`.

    Metrics: micro and macro F1 over the labels, and subset accuracy (the whole label set exactly right).
    """

    def __init__(self, num_labels: int, threshold: float = 0.5):
        self.num_labels, self.threshold = num_labels, threshold
        self._metric = None
        self.reset()

    def reset(self):
        self.probabilities, self.references = [], []

    def add(self, batch, outputs, gather):
        probabilities, references = gather((outputs.logits.float().sigmoid(), batch["labels"]))  # (B, K) each
        self.probabilities.append(probabilities.cpu())
        self.references.append(references.cpu())

    def outputs(self) -> dict:
        probabilities = torch.cat(self.probabilities)
        return {
            "references": torch.cat(self.references).round().int().tolist(),
            "predictions": (probabilities > self.threshold).int().tolist(),
            "probabilities": probabilities.tolist(),
        }

    def compute(self) -> dict:
        if self._metric is None:
            self._metric = load_metric("multilabel")
        out = self.outputs()
        return self._metric.compute(predictions=out["predictions"], references=out["references"])


class RegressionEvaluator:
    """One number per example: Pearson and Spearman correlation, mean squared and mean absolute error."""

    NAMES = ("pearson", "spearman", "mse", "mae")

    def __init__(self):
        self._metrics = None
        self.reset()

    def reset(self):
        self.predictions, self.references = [], []

    def add(self, batch, outputs, gather):
        predictions, references = gather((outputs.logits.float().squeeze(-1), batch["labels"].float()))  # (B,) each
        self.predictions.append(predictions.cpu())
        self.references.append(references.cpu())

    def outputs(self) -> dict:
        return {"references": torch.cat(self.references).tolist(), "predictions": torch.cat(self.predictions).tolist()}

    def compute(self) -> dict:
        if self._metrics is None:
            self._metrics = [load_metric(name) for name in self.NAMES]
        out = self.outputs()
        scores = {}
        for metric in self._metrics:
            scores.update(metric.compute(predictions=out["predictions"], references=out["references"]))
        return scores


class LanguageModelEvaluator:
    """Perplexity over the predicted tokens (labels != -100), with the usual one-token shift."""

    def __init__(self):
        self._metric = None
        self.reset()

    def reset(self):
        self.nll, self.tokens = [], []

    def add(self, batch, outputs, gather):
        logits = outputs.logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
        labels = batch["labels"][:, 1:]  # (B, T-1)
        token_nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), labels, ignore_index=-100, reduction="none"
        )
        nll, tokens = gather((token_nll.sum(dim=1), (labels != -100).sum(dim=1)))  # (B,) each
        self.nll.append(nll.double().cpu())
        self.tokens.append(tokens.cpu())

    def compute(self) -> dict:
        if self._metric is None:
            self._metric = load_metric("perplexity")
        return self._metric.compute(
            predictions=torch.cat(self.nll).tolist(), references=torch.cat(self.tokens).tolist()
        )

    def outputs(self) -> dict:
        """The last evaluation, block by block: summed negative log-likelihood (nats) and tokens predicted."""
        return {"nll": torch.cat(self.nll).tolist(), "tokens": torch.cat(self.tokens).tolist()}


class MaskedLMEvaluator:
    """BERT's pretraining objective on held-out text: the masked-token loss and the masked-token accuracy.

    Only the positions the masking selected are scored (labels != -100): the mean cross-entropy of the original
    token there ("loss", through the perplexity module, which also gives exp(loss)), and how often the most likely
    token is the original one ("accuracy": masked tokens right / masked tokens). The selection must be the same
    at every evaluation for the numbers to be comparable step to step: the recipe masks its held-out text once,
    with a fixed seed (recipes/pretraining.py), and this evaluator only reads the labels.
    """

    def __init__(self):
        self._metric = None
        self.reset()

    def reset(self):
        self.nll, self.tokens, self.correct = [], [], []

    def add(self, batch, outputs, gather):
        labels = batch["labels"]  # (B, T): the original id where a token was selected, else -100
        scored = labels != -100  # (B, T)
        logits = outputs.logits.float()  # (B, T, V), or (N, V) at the N scored positions only
        if logits.dim() == 3:
            logits = logits[scored]  # (N, V)
        targets = labels[scored]  # (N,)
        token_nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")  # (N,)
        sequence = scored.nonzero()[:, 0]  # (N,): which sequence each scored token is in
        per_sequence = lambda values: torch.zeros(labels.size(0), dtype=values.dtype, device=values.device).index_add_(
            0, sequence, values
        )  # (N,) -> (B,)
        correct = (logits.argmax(dim=-1) == targets).long()  # (N,)
        # per-sequence sums: every process pads its batches to its own width, so only these gather evenly
        nll, tokens, right = gather((per_sequence(token_nll), scored.sum(dim=1), per_sequence(correct)))
        self.nll.append(nll.double().cpu())
        self.tokens.append(tokens.cpu())
        self.correct.append(right.cpu())

    def compute(self) -> dict:
        if self._metric is None:
            self._metric = load_metric("perplexity")
        nll, tokens = torch.cat(self.nll).tolist(), torch.cat(self.tokens).tolist()
        scores = self._metric.compute(predictions=nll, references=tokens)  # loss: mean NLL per masked token
        scores["accuracy"] = int(torch.cat(self.correct).sum()) / max(sum(tokens), 1)
        return scores

    def outputs(self) -> dict:
        """The last evaluation, sequence by sequence: summed NLL (nats), masked tokens, and how many were right."""
        return {
            "nll": torch.cat(self.nll).tolist(),
            "tokens": torch.cat(self.tokens).tolist(),
            "correct": torch.cat(self.correct).tolist(),
        }


class TokenClassificationEvaluator:
    """Entity precision / recall / F1 (seqeval's semantics, micro over entities) and tag accuracy, per word.

    Only positions with a label (not -100) are scored: the first sub-token of each word in validation and test.
    `per_type` holds the last compute()'s scores by entity type (the model card's table); outputs() carries it.
    """

    def __init__(self, label_names: list[str], max_length: int, mode: str = "lenient", scheme: str = "IOB2"):
        self.label_names, self.max_length = label_names, max_length
        self.mode, self.scheme = mode, scheme
        self._metric = None
        self.per_type = {}
        self.reset()

    def reset(self):
        self.predictions, self.references = [], []

    def add(self, batch, outputs, gather):
        # Batches are padded per batch, so each process has its own width: pad to max_length before gathering.
        predictions = outputs.logits.argmax(dim=-1)  # (B, T)
        labels = batch["labels"]  # (B, T), -100 where nothing is scored
        width = self.max_length - labels.shape[1]
        predictions = torch.nn.functional.pad(predictions, (0, width), value=-100)
        labels = torch.nn.functional.pad(labels, (0, width), value=-100)
        predictions, labels = gather((predictions, labels))
        for p, r in zip(predictions.cpu().tolist(), labels.cpu().tolist()):
            scored = [(pi, ri) for pi, ri in zip(p, r) if ri != -100]
            self.predictions.append([self.label_names[pi] for pi, _ in scored])
            self.references.append([self.label_names[ri] for _, ri in scored])

    def compute(self) -> dict:
        if self._metric is None:
            self._metric = load_metric("entity_f1")
        scores = self._metric.compute(
            predictions=self.predictions, references=self.references, mode=self.mode, scheme=self.scheme
        )
        self.per_type = scores.pop("per_type")
        return scores

    def outputs(self) -> dict:
        """The last evaluation: tag names per sentence (scored words only) and, from compute(), the entity scores
        by type."""
        return {"references": self.references, "predictions": self.predictions, "per_type": self.per_type}


class QuestionAnsweringEvaluator:
    """Extractive QA: exact match and F1 with SQuAD's normalisation (the squad metric; squad_v2 on data with
    unanswerable questions, whose HasAns / NoAns / best-threshold figures come with it).

    The batches hold windows (finetune.data.qa_windows), each with a `window_id` that the engine hands to add() but
    not to the model (`batch_only`). The start and end logits of every window are gathered from every process,
    placed by window_id, and the windows of each example go through the n-best search (finetune.core.qa_spans).
    `windows` is the EvalWindows table (split, example, context offsets per window); `examples` maps each split to
    its examples (id, context, answers). outputs() holds the last split's predictions, n-best lists and no-answer
    probabilities by example id: predictions.json and nbest_predictions.json.
    """

    batch_only = ("window_id",)

    def __init__(
        self,
        examples: dict,
        windows,
        version_2: bool,
        max_length: int,
        n_best_size: int = 20,
        max_answer_length: int = 30,
        null_score_diff_threshold: float = 0.0,
    ):
        self.examples = {
            name: {"id": list(split["id"]), "context": list(split["context"]), "answers": list(split["answers"])}
            for name, split in examples.items()
        }
        self.windows, self.version_2, self.max_length = windows, version_2, max_length
        self.n_best_size, self.max_answer_length = n_best_size, max_answer_length
        self.null_score_diff_threshold = null_score_diff_threshold
        self._metric = None
        self.reset()

    def reset(self):
        self.logits = {}  # window_id -> (start logits, end logits)
        self.answers = {}

    def add(self, batch, outputs, gather):
        # Batches are padded per batch, so each process has its own width: pad to max_length before gathering.
        width = self.max_length - outputs.start_logits.shape[1]
        start = torch.nn.functional.pad(outputs.start_logits.float(), (0, width), value=-1e9)  # (B, max_length)
        end = torch.nn.functional.pad(outputs.end_logits.float(), (0, width), value=-1e9)  # (B, max_length)
        ids, start, end = gather((batch["window_id"], start, end))
        for i, s, e in zip(ids.tolist(), start.cpu().numpy(), end.cpu().numpy()):
            self.logits[i] = (s, e)

    def predict(self) -> tuple[str, dict]:
        """The split these windows belong to, and each of its examples' answer (qa_spans.predict_answer)."""
        split = {self.windows.split[i] for i in self.logits}
        if len(split) != 1:
            raise RuntimeError(f"one evaluation saw windows of several splits: {sorted(split)}")
        split = split.pop()
        by_example = {}
        for i in sorted(self.logits):
            start, end = self.logits[i]
            by_example.setdefault(self.windows.example[i], []).append((start, end, self.windows.offsets[i]))
        examples = self.examples[split]
        answers = {}
        for index, windows in sorted(by_example.items()):
            answers[examples["id"][index]] = predict_answer(
                examples["context"][index],
                windows,
                self.n_best_size,
                self.max_answer_length,
                self.version_2,
                self.null_score_diff_threshold,
            )
        return split, answers

    def compute(self) -> dict:
        split, self.answers = self.predict()
        examples = self.examples[split]
        return squad_scores(self.answers, examples["id"], examples["answers"], self.version_2, self._load())

    def _load(self):
        if self._metric is None:
            self._metric = load_metric("squad_v2" if self.version_2 else "squad")
        return self._metric

    def outputs(self) -> dict:
        """The last evaluation, by example id: predictions {id: text}, nbest {id: [...]}, no_answer_probability."""
        return {
            "predictions": {i: a["text"] for i, a in self.answers.items()},
            "nbest": {i: a["nbest"] for i, a in self.answers.items()},
            "no_answer_probability": {i: a["no_answer_probability"] for i, a in self.answers.items()},
        }


def squad_scores(answers: dict, ids: list, references: list, version_2: bool, metric) -> dict:
    """The squad / squad_v2 metric on {id: predict_answer(...)}; every reference must have a prediction."""
    predictions = []
    for i in ids:
        prediction = {"id": i, "prediction_text": answers[i]["text"]}
        if version_2:
            prediction["no_answer_probability"] = answers[i]["no_answer_probability"]
        predictions.append(prediction)
    refs = [{"id": i, "answers": a} for i, a in zip(ids, references)]
    return metric.compute(predictions=predictions, references=refs)


class Seq2SeqEvaluator:
    """An encoder-decoder's validation: the loss per target token (teacher forcing, every example), and on the first
    `generate_samples` examples what the model writes on its own, scored against the reference by `score`.

    generate(batch) -> output token ids per example (the recipe's closure over the model being trained, greedy or
    beam search as configured); score(predictions, references) -> metrics (BLEU/chrF or ROUGE, from
    finetune.core.metrics). References are the batch's labels decoded: the tokenized target, cut to the maximum
    target length. generate_samples 0: loss only (then the loss selects the best weights).
    """

    def __init__(self, tokenizer, generate=None, score=None, generate_samples: int = 0):
        self.tokenizer, self.generate, self.score = tokenizer, generate, score
        self.generate_samples = generate_samples if generate is not None else 0
        self.reset()

    def reset(self):
        self.nll, self.tokens, self.predictions, self.references = [], [], [], []

    def add(self, batch, outputs, gather):
        labels = batch["labels"]  # (B, T), -100 where no token is scored
        logits = outputs.logits.float()  # (B, T, V): position t predicts labels[t] (the decoder input is shifted)
        token_nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), labels, ignore_index=-100, reduction="none"
        )  # (B, T)
        nll, tokens = gather((token_nll.sum(dim=1), (labels != -100).sum(dim=1)))  # (B,) each
        self.nll.append(nll.double().cpu())
        self.tokens.append(tokens.cpu())
        if len(self.predictions) < self.generate_samples:  # the same decision on every process: counts are gathered
            pad = self.tokenizer.pad_token_id
            predictions = self.decode(self.generate(batch))
            references = self.decode(labels.masked_fill(labels == -100, pad).tolist())
            predictions, references = gather(predictions), gather(references)
            self.predictions += list(predictions)
            self.references += list(references)

    def decode(self, ids) -> list[str]:
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]

    def compute(self) -> dict:
        nll, tokens = torch.cat(self.nll).sum().item(), torch.cat(self.tokens).sum().item()
        scores = {"loss": nll / max(tokens, 1)}
        if self.predictions:
            n = self.generate_samples  # (whole batches were generated: score exactly the first n)
            scores.update(self.score(self.predictions[:n], self.references[:n]))
        return scores

    def outputs(self) -> dict:
        """The last evaluation: the generated sample's predictions and references (decoded text)."""
        return {"predictions": self.predictions, "references": self.references}


# What each seq2seq task is scored by (local evaluate modules, finetune/core/metrics/), on the generated text.
SEQ2SEQ_METRICS = {"translation": "sacrebleu", "summarization": "rouge"}
SEQ2SEQ_KEYS = {"translation": ("bleu", "chrf"), "summarization": ("rouge1", "rouge2", "rougeL", "rougeLsum")}


@functools.cache
def _metric(name: str):
    """A loaded metric module, kept: it holds no state between compute() calls, and loading one costs ~0.5 s (a
    seq2seq run scores at every validation and for every model)."""
    return load_metric(name)


def seq2seq_scores(task: str, predictions: list[str], references: list[str], lowercase: bool = False) -> dict:
    """BLEU and chrF (sacreBLEU, corpus level, 0..100) for translation, ROUGE-1/2/L/Lsum (stemmed, 0..1) for
    summarization, and gen_words: the mean output length in words. lowercase: score case-insensitively (the
    outputs of an uncased tokenizer, and then every row of a comparison alike); the sacreBLEU signature says so.

    Returns the numbers only; seq2seq_signature() gives the signature to print beside them.
    """
    options = {"lowercase": lowercase} if task == "translation" else {}
    computed = _metric(SEQ2SEQ_METRICS[task]).compute(predictions=predictions, references=references, **options)
    scores = {key: computed[key] for key in SEQ2SEQ_KEYS[task]}
    scores["gen_words"] = sum(len(p.split()) for p in predictions) / max(len(predictions), 1)
    return scores


def seq2seq_signature(task: str, lowercase: bool = False) -> dict:
    """How the scores were computed: sacreBLEU's BLEU and chrF signatures; ROUGE's settings."""
    if task == "translation":
        computed = _metric("sacrebleu").compute(predictions=["a"], references=["a"], lowercase=lowercase)
        return {"bleu": computed["bleu_signature"], "chrf": computed["chrf_signature"]}
    return {"rouge": "rouge_score, F-measure, Porter stemmer, Lsum on rule-split sentences"}
