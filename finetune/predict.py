"""`finetune predict RUN_DIR INPUT ...`: run a saved classifier on texts (or image files) and print the labels.

It is `transformers.pipeline` on the run directory, nothing more: what works here works in your own code.
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune.errors import CommandParser, UserError, user_errors_exit

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def pipeline_for(run_dir: Path):
    from transformers import AutoConfig, pipeline

    from finetune.lora import is_adapter_dir

    if is_adapter_dir(run_dir) and not (run_dir / "config.json").is_file():
        return _adapter_pipeline(run_dir)
    if not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir} holds no saved model (no config.json): pass a run directory written by finetune train")
    import finetune.scratch  # noqa: F401  registers the from-scratch models with the Auto classes

    config = AutoConfig.from_pretrained(run_dir)
    architectures = config.architectures or []
    if any(a.endswith("ForTokenClassification") for a in architectures):
        return token_pipeline(str(run_dir)), "token-classification"
    if architectures and all(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures):
        # pipeline() would bolt a random classification head onto it and print confident nonsense
        raise UserError(f"{run_dir} holds a causal LM ({', '.join(architectures)}), not a classifier: use "
                        f"`finetune generate {run_dir} PROMPT`")
    task = "image-classification" if getattr(config, "num_channels", None) and not getattr(config, "vocab_size", None) else "text-classification"
    if (run_dir / "preprocessor_config.json").is_file():
        task = "image-classification"
    return pipeline(task, model=str(run_dir)), task


def _adapter_pipeline(run_dir: Path):
    """A LoRA run (finetune.lora): the base model from its local folder + the adapter, in a pipeline."""
    from transformers import AutoImageProcessor, AutoTokenizer, pipeline

    from finetune.lora import load_adapter_run, read_adapter_config

    task_type = read_adapter_config(run_dir).get("task_type")
    if task_type == "CAUSAL_LM":
        raise UserError(f"{run_dir} holds a causal LM's adapter: use `finetune generate {run_dir} PROMPT`")
    model, _ = load_adapter_run(run_dir)
    model = model.merge_and_unload()  # in memory only: a plain model, which pipeline() knows
    if task_type == "TOKEN_CLS":
        return token_pipeline(model, AutoTokenizer.from_pretrained(run_dir)), "token-classification"
    if (run_dir / "preprocessor_config.json").is_file():
        return pipeline("image-classification", model=model, image_processor=AutoImageProcessor.from_pretrained(run_dir)), "image-classification"
    return pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(run_dir)), "text-classification"


def main(argv=None) -> int:
    parser = CommandParser(prog="finetune predict", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("inputs", nargs="+", help="texts, or image files for an image model")
    with user_errors_exit():
        args = parser.parse_args(argv)
        if not args.run_dir.is_dir():
            raise UserError(f"run directory {args.run_dir} does not exist: pass the --output_dir of a finished run")
        classify, task = pipeline_for(args.run_dir)
        inputs = args.inputs
        if task == "image-classification":
            inputs = [load_image(p) for p in inputs]
        for text, prediction in zip(args.inputs, classify(inputs)):
            if task == "token-classification":
                print(json.dumps(entity_spans(text, prediction)))
                continue
            top = prediction[0] if isinstance(prediction, list) else prediction
            print(json.dumps({"input": text, "label": top["label"], "score": round(float(top["score"]), 4)}))
    return 0


def token_pipeline(model, tokenizer=None):
    """A tagger that groups sub-tokens into words (each word takes its first piece's tag, as in training) and
    words into entities."""
    from transformers import pipeline

    return pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="first")


def entity_spans(text: str, entities: list[dict]) -> dict:
    """One input's entities as spans of the text: type, the words, character offsets, the mean word score."""
    return {"input": text, "entities": [
        {"type": e["entity_group"], "text": text[e["start"]:e["end"]], "start": int(e["start"]), "end": int(e["end"]),
         "score": round(float(e["score"]), 4)} for e in entities]}


def load_image(path: str):
    from PIL import Image, UnidentifiedImageError

    from finetune.data.images import to_rgb

    p = Path(path)
    if not p.is_file():
        raise UserError(f"image {p} does not exist: check the path")
    try:
        with Image.open(p) as image:
            image.load()
            return to_rgb(image)  # grayscale / RGBA / palette images become RGB exactly as in training
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"{p} is not a readable image ({err}): pass a PNG or JPEG file") from None


if __name__ == "__main__":
    raise SystemExit(main())
