"""The engine with a toy model: what it feeds the model, and how it stops."""

import math
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

from finetune.core import engine
from finetune.core.config import TrainingConfig
from finetune.core.errors import LossDiverged, UserError
from finetune.data.sampling import LengthGroupedBatchSampler


class Recorder(torch.nn.Module):
    """Logistic regression on one feature that remembers every example id it was fed."""

    def __init__(self, nan_at_call=None):
        super().__init__()
        self.linear = torch.nn.Linear(1, 2)
        self.seen, self.calls, self.nan_at_call = [], 0, nan_at_call

    def forward(self, ids, x, labels):
        if self.training:
            self.seen.append(ids.tolist())
            self.calls += 1
        logits = self.linear(x[:, None])
        loss = torch.nn.functional.cross_entropy(logits, labels)
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            loss = loss * math.nan
        return SimpleNamespace(loss=loss, logits=logits)


class ToyEvaluator:
    def reset(self):
        self.ids, self.predictions = [], []

    def add(self, batch, outputs, gather):
        ids, predictions = gather((batch["ids"], outputs.logits.argmax(-1)))
        self.ids += ids.tolist()
        self.predictions += predictions.tolist()

    def compute(self):
        return {"accuracy": sum(p == i % 2 for i, p in zip(self.ids, self.predictions)) / len(self.ids)}

    def outputs(self):
        return {"ids": self.ids, "predictions": self.predictions}


def toy_loaders(n=40, batch_size=4):
    examples = [{"ids": i, "x": float(i % 2), "labels": i % 2} for i in range(n)]
    collate = lambda rows: {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}
    lengths = [1 + i % 7 for i in range(n)]
    make = lambda shuffle: DataLoader(
        examples,
        batch_sampler=LengthGroupedBatchSampler(lengths, batch_size, seed=0, shuffle=shuffle, group_size=2),
        collate_fn=collate,
        generator=torch.Generator().manual_seed(0),
    )
    return {"train": make(True), "validation": make(False), "test": make(False)}


def test_each_epoch_sees_every_example_once_in_a_new_order(tmp_path):
    model = Recorder()
    config = TrainingConfig(output_dir=str(tmp_path), num_epochs=3, learning_rate=0.1, warmup_ratio=0.0)
    result = engine.train(model, toy_loaders(), ToyEvaluator(), config, tmp_path, "toy", metric_for_best="accuracy")
    epochs = [model.seen[i * 10 : (i + 1) * 10] for i in range(3)]
    for batches in epochs:
        assert sorted(i for b in batches for i in b) == list(range(40))
    assert epochs[0] != epochs[1] != epochs[2]
    assert result.steps == 30 and result.train_samples == 120
    assert result.test_metrics["accuracy"] == 1.0  # the toy task is separable


def test_the_test_outputs_come_back_in_the_result_and_a_reused_evaluator_cannot_change_them(tmp_path):
    """The recipes read the test predictions from engine.train's result, then reuse the evaluator (the scratch model,
    MNLI's mismatched split): what came back is the test split's, example by example, whatever runs next."""
    config = TrainingConfig(output_dir=str(tmp_path), num_epochs=2, learning_rate=0.1, warmup_ratio=0.0)
    evaluator, loaders = ToyEvaluator(), toy_loaders()
    result = engine.train(Recorder(), loaders, evaluator, config, tmp_path, "toy", metric_for_best="accuracy")
    test_ids = [i for batch in loaders["test"] for i in batch["ids"].tolist()]
    with torch.no_grad():  # the returned model's own predictions, batch by batch
        predicted = [p for batch in loaders["test"] for p in result.model(**batch).logits.argmax(-1).tolist()]
    assert result.test_outputs == {"ids": test_ids, "predictions": predicted}
    engine.evaluate(result.model, toy_loaders(n=8)["validation"], evaluator, result.accelerator)
    assert len(evaluator.ids) == 8 and result.test_outputs["ids"] == test_ids
    no_test = {k: v for k, v in loaders.items() if k != "test"}
    assert engine.train(Recorder(), no_test, ToyEvaluator(), config, tmp_path / "b", "toy").test_outputs == {}


def test_every_evaluator_has_outputs_and_the_language_models_are_its_token_losses():
    """The engine asks every evaluator for outputs() after the test pass: a task's evaluator without it would fail
    only after a whole training."""
    from finetune.core import evaluation

    evaluators = {name: cls for name, cls in vars(evaluation).items() if name.endswith("Evaluator")}
    assert set(evaluators) == {
        f"{kind}Evaluator"
        for kind in (
            "Classification",
            "MultiLabel",
            "Regression",
            "TokenClassification",
            "LanguageModel",
            "MaskedLM",
            "QuestionAnswering",
            "Seq2Seq",
        )
    }  # (a new task's evaluator joins this list, and this test checks it)
    assert all(callable(getattr(cls, "outputs", None)) for cls in evaluators.values())
    logits = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(1))
    labels[0, 3:] = -100
    lm = evaluation.LanguageModelEvaluator()
    lm.add({"labels": labels}, SimpleNamespace(logits=logits), lambda tensors: tensors)
    out = lm.outputs()
    mean = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 7), labels[:, 1:].reshape(-1))
    assert out["tokens"] == [2, 4] and sum(out["nll"]) / sum(out["tokens"]) == pytest.approx(mean.item(), rel=1e-6)


def test_gradient_accumulation_counts_optimizer_steps(tmp_path):
    config = TrainingConfig(output_dir=str(tmp_path), num_epochs=1, gradient_accumulation_steps=2, warmup_ratio=0.0)
    result = engine.train(Recorder(), toy_loaders(), ToyEvaluator(), config, tmp_path, "toy")
    assert result.steps == 5 and result.train_samples == 40


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    config = TrainingConfig(output_dir=str(tmp_path), num_epochs=2, checkpoint_steps=3, warmup_ratio=0.0)
    with pytest.raises(LossDiverged, match=r"loss became nan at step 5.*step_00000003") as raised:
        engine.train(Recorder(nan_at_call=5), toy_loaders(), ToyEvaluator(), config, tmp_path, "toy")
    assert isinstance(raised.value, UserError)  # still one line and exit 2 at the top, like any user error
    assert engine.latest_checkpoint(tmp_path / "checkpoints" / "toy").name == "step_00000003"


def test_early_stopping(tmp_path):
    config = TrainingConfig(
        output_dir=str(tmp_path),
        num_epochs=20,
        eval_steps=1,
        early_stopping_patience=2,
        learning_rate=1e-9,
        warmup_ratio=0.0,
    )
    result = engine.train(
        Recorder(), toy_loaders(), ToyEvaluator(), config, tmp_path, "toy", metric_for_best="accuracy"
    )
    assert result.stopped_early and result.steps == 3  # no improvement possible at lr 1e-9: stop after 2 more evals


def test_tensorboard_through_accelerate_trackers(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = TrainingConfig(
        output_dir=str(tmp_path), num_epochs=1, log_steps=2, log_with="tensorboard", warmup_ratio=0.0
    )
    engine.train(Recorder(), toy_loaders(), ToyEvaluator(), config, tmp_path, "toy", metric_for_best="accuracy")
    events = list((tmp_path / "logs").rglob("events.out.tfevents.*"))
    assert events
    scalars = set()
    for event_file in events:
        accumulator = EventAccumulator(str(event_file))
        accumulator.Reload()
        scalars |= set(accumulator.Tags()["scalars"])
    assert {"train/loss", "eval/accuracy", "test/accuracy"} <= scalars


def test_train_state_is_exactly_the_checkpoint_json(tmp_path):
    import dataclasses
    import json

    # Stop mid-epoch with accumulation, so the running loss and the batch position are not trivially zero.
    config = TrainingConfig(
        output_dir=str(tmp_path), num_epochs=2, gradient_accumulation_steps=2, stop_after_steps=3, warmup_ratio=0.0
    )
    with pytest.raises(engine.TrainingInterrupted) as stopped:
        engine.train(Recorder(), toy_loaders(), ToyEvaluator(), config, tmp_path, "toy", metric_for_best="accuracy")
    saved = json.loads((stopped.value.checkpoint / engine.STATE_FILE).read_text())
    assert list(saved) == [f.name for f in dataclasses.fields(engine.TrainState)]  # same keys, same order
    state = engine.TrainState.from_json(saved)
    assert state.to_json() == saved
    # 3 steps x 2 batches of 4
    assert (state.step, state.epoch, state.batch_in_epoch, state.train_samples) == (3, 0, 6, 24)
    assert state.running_count == 6 and state.running_loss > 0 and not state.done  # no loss record yet (log_steps)
    # An older checkpoint that lacks keys resumes with the defaults for them.
    assert engine.TrainState.from_json({"step": 10}) == engine.TrainState(step=10)


def test_on_evaluation_sees_every_validation_after_best_model_selection(tmp_path):
    import json

    config = TrainingConfig(output_dir=str(tmp_path), num_epochs=2, eval_steps=4, learning_rate=0.1, warmup_ratio=0.0)
    best_file = tmp_path / "checkpoints" / "toy" / "best" / "best.json"
    calls = []

    def callback(name, step, metrics):
        calls.append((name, step, metrics))
        assert json.loads(best_file.read_text())["step"] <= step  # selection already ran for this evaluation

    with engine.on_evaluation(callback):
        result = engine.train(
            Recorder(), toy_loaders(), ToyEvaluator(), config, tmp_path, "toy", metric_for_best="accuracy"
        )
    evaluations = [("toy", r["step"], r["eval"]) for r in result.history if "eval" in r]
    assert calls == evaluations and [step for _, step, _ in calls] == [4, 8, 10, 12, 16, 20]
    engine.train(Recorder(), toy_loaders(), ToyEvaluator(), config, tmp_path / "again", "toy")
    assert len(calls) == 6  # left the context: no longer called


def test_an_exception_from_on_evaluation_leaves_train_cleanly(tmp_path, monkeypatch):
    import signal

    class Pruned(Exception):
        pass

    bars_closed = []

    class Bar(engine.tqdm):
        def close(self):
            bars_closed.append(self.desc)
            super().close()

    monkeypatch.setattr(engine, "tqdm", Bar)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    during = {}

    def prune_at_step_4(name, step, metrics):
        during.update({s: signal.getsignal(s) for s in handlers})
        if step == 4:
            raise Pruned(f"{name} pruned at {step}")

    # Step 4 is both an evaluation and a checkpoint step: the callback runs before the checkpoint, so none is written.
    config = TrainingConfig(output_dir=str(tmp_path), num_epochs=2, eval_steps=2, checkpoint_steps=2, warmup_ratio=0.0)
    with engine.on_evaluation(prune_at_step_4), pytest.raises(Pruned, match="toy pruned at 4"):
        engine.train(Recorder(), toy_loaders(), ToyEvaluator(), config, tmp_path, "toy", metric_for_best="accuracy")
    assert all(during[s] is not handlers[s] for s in handlers)  # the engine's handlers were installed...
    assert {s: signal.getsignal(s) for s in handlers} == handlers  # ...and are restored
    assert "toy" in bars_closed
    assert engine.latest_checkpoint(tmp_path / "checkpoints" / "toy").name == "step_00000002"
    assert engine._evaluation_callbacks == []


def steps_kept(root):
    return [int(p.name.split("_")[1]) for p in sorted(root.glob("step_*"))]


@pytest.mark.parametrize(
    "keep, kept", [(2, [9, 10]), ("3", [8, 9, 10]), ("last", [10]), ("all", list(range(1, 11))), ("none", [10])]
)
def test_keep_checkpoints_counts_words_and_the_old_integer(tmp_path, keep, kept):
    # (none: the engine keeps the newest while training; finish_run removes it once the run has finished)
    config = TrainingConfig(
        output_dir=str(tmp_path), num_epochs=1, checkpoint_steps=1, warmup_ratio=0.0, keep_checkpoints=keep
    )
    engine.train(Recorder(), toy_loaders(), ToyEvaluator(), config, tmp_path, "toy")
    assert steps_kept(tmp_path / "checkpoints" / "toy") == kept


@pytest.mark.parametrize("bad", [0, "-1", "2.5", "some", ""])
def test_a_bad_keep_checkpoints_is_one_line(bad):
    with pytest.raises(
        UserError, match=r"--keep_checkpoints must be a number of at least 1, or one of all, last, none"
    ):
        TrainingConfig(keep_checkpoints=bad)


def test_save_only_model_checkpoints_hold_weights_only_but_the_last_is_full(tmp_path):
    from finetune.core import run_directory
    from finetune.core.checkpoints import lean

    sizes = {}
    for only in (False, True):
        out = tmp_path / f"only_{only}"
        config = TrainingConfig(
            output_dir=str(out), num_epochs=1, checkpoint_steps=2, warmup_ratio=0.0, save_only_model=only
        )
        engine.train(Recorder(), toy_loaders(), ToyEvaluator(), config, out, "toy")
        during, last = sorted((out / "checkpoints" / "toy").glob("step_*"))  # steps 8 and 10
        sizes[only] = run_directory.folder_bytes(during)
        assert (during / "optimizer.bin").is_file() is not only and lean.weights_only_checkpoint(during) is only
        assert (during / "model.safetensors").is_file()
        assert (last / "optimizer.bin").is_file() and not lean.weights_only_checkpoint(last)  # the end: full
    assert sizes[True] < sizes[False]


def test_a_crash_after_a_weights_only_checkpoint_refuses_to_resume_in_one_line(tmp_path):
    config = dict(output_dir=str(tmp_path), num_epochs=1, checkpoint_steps=3, warmup_ratio=0.0, save_only_model=True)
    with pytest.raises(UserError, match="loss became nan"):  # the crash: after step 3's checkpoint, before step 6's
        engine.train(Recorder(nan_at_call=5), toy_loaders(), ToyEvaluator(), TrainingConfig(**config), tmp_path, "toy")
    with pytest.raises(
        UserError,
        match=r"cannot resume from .*step_00000003: it holds the model weights only "
        r"\(--save_only_model.*pass --overwrite",
    ):
        engine.train(Recorder(), toy_loaders(), ToyEvaluator(), TrainingConfig(**config, resume=True), tmp_path, "toy")


def test_a_pause_under_save_only_model_still_saves_a_resumable_checkpoint(tmp_path):
    import torch

    straight = TrainingConfig(output_dir=str(tmp_path), num_epochs=1, checkpoint_steps=2, warmup_ratio=0.0)
    model = lambda: torch.manual_seed(0) and Recorder()  # the same initial weights each time
    expected = engine.train(model(), toy_loaders(), ToyEvaluator(), straight, tmp_path / "straight", "toy").model
    paused = dict(output_dir=str(tmp_path), num_epochs=1, checkpoint_steps=2, warmup_ratio=0.0, save_only_model=True)
    with pytest.raises(engine.TrainingInterrupted) as stopped:
        engine.train(
            model(),
            toy_loaders(),
            ToyEvaluator(),
            TrainingConfig(**paused, stop_after_steps=5),
            tmp_path / "paused",
            "toy",
        )
    assert (stopped.value.checkpoint / "optimizer.bin").is_file()  # full, though routine ones are weights only
    resumed = engine.train(
        model(), toy_loaders(), ToyEvaluator(), TrainingConfig(**paused, resume=True), tmp_path / "paused", "toy"
    ).model
    assert all(torch.equal(a, b) for a, b in zip(expected.state_dict().values(), resumed.state_dict().values()))


def test_a_stop_signal_the_loop_never_looked_at_is_passed_on_not_dropped():
    """Ctrl-C after the loop's last look (its last step, an early stop, a pruned search trial) still stops."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):  # nothing answered it: the caller's handler gets it
            with engine.stop_signals() as requested:
                signal.raise_signal(signal.SIGINT)
                assert requested.is_set()  # the engine's handler took it first (no KeyboardInterrupt yet)

        class TrialPruned(Exception):
            pass

        with pytest.raises(KeyboardInterrupt) as caught:  # an exception on its way out does not swallow it
            with engine.stop_signals():
                signal.raise_signal(signal.SIGINT)
                raise TrialPruned
        assert isinstance(caught.value.__context__, TrialPruned)

        with pytest.raises(engine.TrainingInterrupted):  # answered by a pause: not delivered twice
            with engine.stop_signals():
                signal.raise_signal(signal.SIGINT)
                raise engine.TrainingInterrupted("paused", None)
    finally:
        signal.signal(signal.SIGINT, before)
