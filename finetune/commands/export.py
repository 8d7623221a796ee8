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

An encoder-decoder (translation, summarization) exports two graphs, as generation uses them:
    encoder.onnx          input_ids, attention_mask -> encoder_hidden_states (the source, read once)
    decoder.onnx          decoder_input_ids, encoder_hidden_states, attention_mask -> logits of every output position
                          (no key/value cache: each step feeds the whole output so far)
and is verified by decoding: greedy decoding through ONNX Runtime (onnx_greedy) must write exactly the tokens
PyTorch's generate() writes for the first test sources, or nothing is written.
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


# ---- encoder-decoders: two graphs, verified by decoding ------------------------------------------------------------


def _encoder_module(model):
    import torch

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            encoder = self.model.get_encoder()
            return encoder(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state

    return Encoder().eval()


def _decoder_module(model):
    import torch
    from transformers.modeling_outputs import BaseModelOutput

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, decoder_input_ids, encoder_hidden_states, attention_mask):
            outputs = self.model(
                encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden_states),
                attention_mask=attention_mask,
                decoder_input_ids=decoder_input_ids,
                use_cache=False,
            )
            return outputs.logits

    return Decoder().eval()


def _export_graph(module, example: dict, dynamic: dict, path: Path, output: str) -> None:
    import torch

    try:
        program = torch.onnx.export(
            module,
            args=(),
            kwargs=example,
            dynamic_shapes=dynamic,
            input_names=list(example),
            output_names=[output],
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    except Exception as err:  # torch.export reports unsupported code in many exception types
        raise UserError(
            f"torch.onnx.export could not export {type(module.model).__name__}'s {path.stem}: "
            f"{str(err).strip().splitlines()[0]}"
        ) from None
    program.save(str(path))


def export_encoder_decoder(run, folder: Path, progress=print) -> dict:
    """encoder.onnx and decoder.onnx for a seq2seq run (see the module's docstring)."""
    import logging
    import warnings

    import torch

    model = run.model.float().cpu().eval()
    settings = run.kind.generation(run)
    sources = verification_sources(run, 4)
    batch = run.processor(
        [settings["prefix"] + s for s in sources],
        max_length=settings["max_source_length"],
        truncation=True,
        padding=True,
        return_tensors="pt",
    )
    source = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    with torch.no_grad():
        hidden = _encoder_module(model)(**source)
    start = model.generation_config.decoder_start_token_id
    decoder_input = torch.full((len(sources), 3), start, dtype=torch.long)
    b, s, t = torch.export.Dim("batch"), torch.export.Dim("source"), torch.export.Dim("target")
    progress(f"- exporting with {EXPORTER}: encoder.onnx and decoder.onnx")
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), eager(model):
        warnings.simplefilter("ignore")
        _export_graph(
            _encoder_module(model),
            source,
            {"input_ids": {0: b, 1: s}, "attention_mask": {0: b, 1: s}},
            folder / "encoder.onnx",
            "encoder_hidden_states",
        )
        _export_graph(
            _decoder_module(model),
            {
                "decoder_input_ids": decoder_input,
                "encoder_hidden_states": hidden,
                **{"attention_mask": source["attention_mask"]},
            },
            {"decoder_input_ids": {0: b, 1: t}, "encoder_hidden_states": {0: b, 1: s}, "attention_mask": {0: b, 1: s}},
            folder / "decoder.onnx",
            "logits",
        )
    return {
        "graphs": {
            "encoder.onnx": {"inputs": ["input_ids", "attention_mask"], "outputs": ["encoder_hidden_states"]},
            "decoder.onnx": {
                "inputs": ["decoder_input_ids", "encoder_hidden_states", "attention_mask"],
                "outputs": ["logits"],
            },
        },
        "decoding": {
            "decoder_start_token_id": start,
            "eos_token_id": model.generation_config.eos_token_id,
            "pad_token_id": model.generation_config.pad_token_id,
            **settings,
        },
    }


class eager:
    """Export with the eager attention (plain matmul + softmax): what every ONNX opset has."""

    def __init__(self, model):
        self.model, self.before = model, getattr(model.config, "_attn_implementation", None)

    def __enter__(self):
        if self.before not in (None, "eager") and hasattr(self.model, "set_attn_implementation"):
            self.model.set_attn_implementation("eager")

    def __exit__(self, *exc):
        if self.before not in (None, "eager") and hasattr(self.model, "set_attn_implementation"):
            self.model.set_attn_implementation(self.before)


def verification_sources(run, count: int) -> list[str]:
    if not run.dataset:
        raise UserError(
            f"{run.root} has no config.yaml naming its dataset: the export is verified on the run's own "
            "test data; export a run directory written by finetune train"
        )
    columns = {name: run.config.get(name) or default for name, default in run.kind.columns.items()}
    examples = run.kind.examples(run, run.dataset, "test", columns)
    if len(examples) < 2:
        raise UserError("the run's test split has fewer than 2 examples: the export needs 2 to trace a batch axis")
    return list(examples.select(range(min(count, len(examples))))["source"])


def onnx_greedy(encoder, decoder, input_ids, attention_mask, start: int, eos: int, pad: int, max_new_tokens: int):
    """Greedy decoding with two ONNX Runtime sessions: encode once, then feed the output so far and append the most
    likely token, until every sequence has written `eos` (then padded) or max_new_tokens. numpy in, list of ids out
    (the start token first), as generate() returns them."""
    import numpy as np

    hidden = encoder.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})[0]
    output = np.full((input_ids.shape[0], 1), start, dtype=np.int64)
    finished = np.zeros(input_ids.shape[0], dtype=bool)
    for _ in range(max_new_tokens):
        feed = {"decoder_input_ids": output, "encoder_hidden_states": hidden, "attention_mask": attention_mask}
        logits = decoder.run(None, feed)[0]  # (B, t, V)
        next_token = np.where(finished, pad, logits[:, -1].argmax(axis=-1))
        finished |= next_token == eos
        output = np.concatenate([output, next_token[:, None].astype(np.int64)], axis=1)
        if finished.all():
            break
    return output.tolist()


def verify_decoding(run, folder: Path, info: dict, progress=print) -> dict:
    """ONNX Runtime's greedy tokens == PyTorch generate()'s greedy tokens on the first test sources."""
    import torch

    settings = dict(info["decoding"])
    sources = verification_sources(run, 8)
    batch = run.processor(
        [settings["prefix"] + s for s in sources],
        max_length=settings["max_source_length"],
        truncation=True,
        padding=True,
        return_tensors="pt",
    )
    max_new_tokens = int(settings.get("max_new_tokens") or 64)
    with torch.no_grad():
        expected = run.model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=max_new_tokens,
            num_beams=1,
            do_sample=False,
            no_repeat_ngram_size=0,
        ).tolist()
    got = onnx_greedy(
        session(folder / "encoder.onnx"),
        session(folder / "decoder.onnx"),
        batch["input_ids"].numpy(),
        batch["attention_mask"].numpy(),
        settings["decoder_start_token_id"],
        settings["eos_token_id"],
        settings["pad_token_id"],
        max_new_tokens,
    )
    pad = settings["pad_token_id"]
    strip = lambda ids: [i for i in ids[1:] if i != pad]
    same = sum(strip(a) == strip(b) for a, b in zip(expected, got))
    progress(
        f"- greedy decoding through ONNX Runtime vs PyTorch generate() on {len(sources)} test sources: {same} equal"
    )
    if same != len(sources):
        raise UserError(
            f"greedy decoding through ONNX Runtime wrote other tokens than PyTorch for {len(sources) - same} of "
            f"{len(sources)} test sources: nothing was written; report this model ({type(run.model).__name__})"
        )
    return {"examples": len(sources), "split": "test", "greedy_tokens_equal": same, "max_new_tokens": max_new_tokens}


def export(run_dir, output=None, quantize=None, progress=print) -> dict:
    """Export, verify and (optionally) quantize; returns what export.json holds."""

    run = open_run(run_dir, verb="finetune export")
    output = Path(output) if output is not None else run.path / "onnx"
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output} is a file: name a folder")
    if getattr(run.kind, "encoder_decoder", False):
        return export_seq2seq(run, output, quantize, progress)
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


def export_seq2seq(run, output: Path, quantize, progress=print) -> dict:
    if quantize:
        raise UserError("--quantize is not supported for encoder-decoder runs yet: export without it")
    info = {
        "model": run.path.name if run.path != run.root else run.root.name,
        "kind": run.kind.name,
        "architecture": type(run.model).__name__,
        "lora_merged": run.lora,
        "exporter": EXPORTER,
    }
    with (
        writing_into(output, "finetune export"),
        disk_errors("the ONNX export", output.parent),
        atomic_dir(output) as tmp,
    ):
        info.update(export_encoder_decoder(run, tmp, progress))
        info["verification"] = verify_decoding(run, tmp, info, progress)
        atomic_write_text(tmp / "config.json", shipped_config(run.model.config))
        run.processor.save_pretrained(tmp)
        atomic_write_json(tmp / "export.json", info)
    progress(f"exported to {output}  (encoder.onnx, decoder.onnx; see export.json)")
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
