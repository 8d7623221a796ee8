"""`finetune export RUN_DIR --format onnx [--output DIR] [--quantize dynamic-int8]`: the model as an ONNX graph,
with its tokenizer or image processor beside it, checked against PyTorch by ONNX Runtime.

    finetune export runs/sentiment --format onnx                    # -> runs/sentiment/onnx/
    finetune export runs/sentiment/scratch --format onnx            # the from-scratch model exports too
    finetune export runs/image_classification --format onnx --quantize dynamic-int8

What the folder holds:
    model.onnx            inputs input_ids, attention_mask (+ token_type_ids for BERT) or pixel_values, with
                          dynamic batch (and sequence) axes; output logits (a question-answering model:
                          start_logits and end_logits). A causal LM exports its full-sequence logits (no key/value
                          cache): enough for scoring, and for generation one step at a time.
    model.int8.onnx       with --quantize dynamic-int8: int8 weights, activations quantized at run time
    config.json           the model's config (id2label: what each logit means), without local paths
    tokenizer files / preprocessor_config.json, as saved by transformers
    export.json           the exporter, the inputs, the verification (max abs difference) and the int8 accuracy

The exporter is `torch.onnx.export` (the dynamo exporter, onnxscript). optimum's ONNX export is the ecosystem's
usual tool, but optimum-onnx requires transformers < 4.58 and this toolkit runs on transformers 5; the scratch
models are unknown to it anyway. A LoRA run is merged into its base first.

Verification: a batch of real inputs from the run's own test split goes through PyTorch and ONNX Runtime; the
largest absolute difference of the logits is printed and must be below 1e-4 (fp32), or nothing is written.
"""

from __future__ import annotations

from pathlib import Path

from finetune.core.atomic_io import atomic_dir, atomic_write_json, atomic_write_text, disk_errors
from finetune.core.errors import CommandParser, UserError, user_errors_exit
from finetune.core.run_directory import writing_into
from finetune.reporting.card import public_record
from finetune.tasks.runs import open_run

TOLERANCE = 1e-4
OPSET = 18
EXPORTER = f"torch.onnx.export (dynamo exporter, opset {OPSET})"
QUANTIZATIONS = ("dynamic-int8",)


def output_names(run) -> list[str]:
    """What the graph outputs: the logits, or a question-answering model's start and end logits."""
    return ["start_logits", "end_logits"] if run.kind.name == "question-answering" else ["logits"]


def _logits_module(model, lm: bool, outputs=("logits",)):
    """The model as a module from named tensors to its logits (`outputs`): what an exported graph needs."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, pixel_values=None):
            inputs = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": token_type_ids,
                "pixel_values": pixel_values,
            }
            inputs = {k: v for k, v in inputs.items() if v is not None}
            if lm:
                inputs["use_cache"] = False
            result = self.model(**inputs)
            return tuple(getattr(result, name) for name in outputs) if len(outputs) > 1 else result[outputs[0]]

    return Logits().eval()


def sample_batches(run, count: int = 16, batch_size: int = 8):
    """Batches of real model inputs from the run's own test split (first `count` examples)."""
    if not run.dataset:
        raise UserError(
            f"{run.root} has no config.yaml naming its dataset: the export is verified on the run's own "
            "test data; export a run directory written by finetune train"
        )
    columns = {name: run.config.get(name) or default for name, default in run.kind.columns.items()}
    examples = run.kind.examples(run, run.dataset, "test", columns)
    examples = examples.select(range(min(count, len(examples))))
    return list(run.kind.loader(run, examples, batch_size))


def export_onnx(run, folder: Path, progress=print) -> dict:
    """Write model.onnx for `run` into `folder`; return {input names, dynamic axes}."""
    import logging
    import warnings

    import torch

    names = run.kind.input_names(run)
    batch = sample_batches(run, count=8, batch_size=8)[0]
    example = {name: batch[name] for name in names}
    if next(iter(example.values())).shape[0] < 2:
        raise UserError(
            "the run's test split has fewer than 2 examples: the export needs at least 2 to trace a dynamic batch axis"
        )
    batch_dim = torch.export.Dim("batch")
    sequence_dim = torch.export.Dim("sequence")
    dynamic = {
        name: ({0: batch_dim, 1: sequence_dim} if run.kind.modality == "text" else {0: batch_dim}) for name in names
    }
    module = _logits_module(run.model.float().cpu(), run.kind.name == "text-generation", output_names(run))
    progress(f"- exporting with {EXPORTER}: inputs {', '.join(names)}")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed": not needed here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(
                module,
                args=(),
                kwargs=example,
                dynamic_shapes=dynamic,
                input_names=names,
                output_names=output_names(run),
                opset_version=OPSET,
                dynamo=True,
                verbose=False,
            )
        except Exception as err:  # torch.export reports unsupported code in many exception types
            raise UserError(
                f"torch.onnx.export could not export {type(run.model).__name__}: {str(err).strip().splitlines()[0]}"
            ) from None
        program.save(str(folder / "model.onnx"))
    return {
        "inputs": names,
        "outputs": output_names(run),
        "dynamic_axes": {name: ["batch", "sequence"] if run.kind.modality == "text" else ["batch"] for name in names},
    }


def session(path: Path):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(sess, batch, names, outputs=("logits",)) -> list:
    """The graph's outputs (`outputs`, in order) for a batch."""
    return sess.run(list(outputs), {name: batch[name].numpy() for name in names})


def max_abs_difference(run, sess, batches) -> float:
    """Largest |PyTorch logits - ONNX Runtime logits| over the batches (padding positions of an LM excluded)."""
    import numpy as np
    import torch

    names, outputs = run.kind.input_names(run), output_names(run)
    module = _logits_module(run.model.float().cpu(), run.kind.name == "text-generation", outputs)
    worst = 0.0
    with torch.no_grad():
        for batch in batches:
            expected = module(**{n: batch[n] for n in names})
            expected = expected if isinstance(expected, tuple) else (expected,)
            for want, got in zip(expected, run_session(sess, batch, names, outputs)):
                difference = np.abs(want.numpy() - got)
                if run.kind.name == "text-generation":  # logits at padding positions are never read
                    difference = difference[batch["attention_mask"].numpy().astype(bool)]
                worst = max(worst, float(difference.max()))
    return worst


def onnx_metrics(run, sess, batch_size: int = 32, progress: bool = True) -> dict:
    """The run's test-split metrics computed from an ONNX Runtime session's logits (the training evaluator)."""
    from types import SimpleNamespace

    import torch
    from tqdm.auto import tqdm

    columns = {name: run.config.get(name) or default for name, default in run.kind.columns.items()}
    examples = run.kind.examples(run, run.dataset, "test", columns)
    names, outputs = run.kind.input_names(run), output_names(run)
    loader = run.kind.loader(run, examples, batch_size)
    evaluator = run.kind.evaluator(run, loader)
    evaluator.reset()
    for batch in tqdm(loader, desc="onnx test", disable=not progress, leave=False):
        logits = {
            name: torch.from_numpy(value) for name, value in zip(outputs, run_session(sess, batch, names, outputs))
        }
        evaluator.add(batch, SimpleNamespace(**logits), lambda tensors: tensors)
    return evaluator.compute()


def quantize_dynamic_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)


def export(run_dir, output=None, quantize=None, progress=print) -> dict:
    """Export, verify and (optionally) quantize; returns what export.json holds."""

    run = open_run(run_dir, verb="finetune export")
    output = Path(output) if output is not None else run.path / "onnx"
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file: name a folder")
    info = {
        "model": run.path.name if run.path != run.root else run.root.name,
        "kind": run.kind.name,
        "architecture": type(run.model).__name__,
        "lora_merged": run.lora,
        "exporter": EXPORTER,
        "optimum": "not used: optimum-onnx requires transformers<4.58; this toolkit runs on transformers 5",
    }
    # In a run directory (RUN_DIR/onnx), under the run's lock and recorded in its manifest
    # (finetune/core/run_directory.py).
    with (
        writing_into(output, "finetune export"),
        disk_errors("the ONNX export", output.parent),
        atomic_dir(output) as tmp,
    ):
        info.update(export_onnx(run, tmp, progress))
        sess = session(tmp / "model.onnx")
        batches = sample_batches(run)
        difference = max_abs_difference(run, sess, batches)
        examples = sum(len(b[info["inputs"][0]]) for b in batches)
        progress(
            f"- ONNX Runtime vs PyTorch on {examples} test examples: max abs difference of the logits {difference:.2e}"
        )
        if not difference < TOLERANCE:
            raise UserError(
                f"the ONNX graph's logits differ from PyTorch's by {difference:.2e} (more than {TOLERANCE:g}): "
                f"nothing was written; report this model ({type(run.model).__name__})"
            )
        info["verification"] = {
            "examples": examples,
            "split": "test",
            "max_abs_difference": difference,
            "tolerance": TOLERANCE,
        }
        if quantize:
            info["quantized"] = _quantize(run, tmp, sess, progress)
        atomic_write_text(tmp / "config.json", shipped_config(run.model.config))
        run.processor.save_pretrained(tmp)
        atomic_write_json(tmp / "export.json", info)
    progress(f"exported to {output}  (model.onnx{', model.int8.onnx' if quantize else ''}; see export.json)")
    return info


def shipped_config(config) -> str:
    """config.json as the export folder ships it: no Python model code, nothing of this machine's filesystem."""
    import json

    data = config.to_dict()
    data.pop("auto_map", None)  # the graph needs no Python model code (a scratch model's save would copy it)
    data.pop("_name_or_path", None)  # the folder the model was loaded from here (transformers' own save drops it too)
    # any other absolute path cut to its last part, as a push does
    return public_record("config.json", json.dumps(data))


def _quantize(run, folder: Path, fp32_session, progress) -> dict:
    quantize_dynamic_int8(folder / "model.onnx", folder / "model.int8.onnx")
    fp32 = onnx_metrics(run, fp32_session)
    int8 = onnx_metrics(run, session(folder / "model.int8.onnx"))
    metric = next(m for m in ("perplexity", "accuracy", "f1") if m in fp32)
    change = int8[metric] - fp32[metric]
    sizes = {name: (folder / name).stat().st_size for name in ("model.onnx", "model.int8.onnx")}
    progress(
        f"- dynamic int8: test {metric} {fp32[metric]:.4f} (fp32) -> {int8[metric]:.4f} (int8), change {change:+.4f}; "
        f"size {sizes['model.onnx'] / 1e6:.1f} MB -> {sizes['model.int8.onnx'] / 1e6:.1f} MB"
    )
    return {
        "method": "onnxruntime.quantization.quantize_dynamic, weights QInt8",
        "test_fp32": fp32,
        "test_int8": int8,
        f"{metric}_change": change,
        "bytes": sizes,
    }


def main(argv=None) -> int:
    parser = CommandParser(prog="finetune export", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (or its scratch/ or merged/ folder)")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="only ONNX for now")
    parser.add_argument("--output", type=Path, default=None, help="the folder to write (default RUN_DIR/onnx)")
    parser.add_argument(
        "--quantize", default=None, choices=QUANTIZATIONS, help="also write an int8 model and its accuracy change"
    )
    with user_errors_exit():
        args = parser.parse_args(argv)
        import datasets

        datasets.disable_progress_bars()
        export(args.run_dir, args.output, args.quantize, progress=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
