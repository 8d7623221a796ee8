"""`finetune figures`: draw the teaching figures of docs/transformer.md, each PNG with a JSON of its numbers.

    finetune figures [--run_dir RUN_DIR] [--out docs/figures]

positional_encoding.png              the sinusoidal position codes (blocks.sinusoidal_positional_encoding)
attention_pretrained_vs_scratch.png  where the models look in "The cat sat on the mat because it was tired":
                                     row 1, the attention of the token "it" in every layer (averaged over heads);
                                     row 2, the whole attention matrix of the last layer (averaged over heads).
attention_before_after.png           (with --run_dir) how fine-tuning changed attention, one row per layer: the
                                     pretrained checkpoint before fine-tuning, after it, the difference, and the
                                     scratch model after training (every matrix averaged over heads).

With --run_dir, the two models are the fine-tuned classifier saved in RUN_DIR and the from-scratch one in
RUN_DIR/scratch, both trained. Without it, the pretrained MiniLM as packaged (not fine-tuned) is compared
with a randomly initialised scratch model: what pretraining alone puts in the attention, against nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from finetune.core.atomic_io import atomic_write_json
from finetune.core.errors import CommandParser, UserError, user_errors_exit
from finetune.models.assets import resolve_model
from finetune.models.loading import _load, resolve
from finetune.models.scratch import (
    ScratchTransformerForSequenceClassification,
    scratch_config_for,
    sinusoidal_positional_encoding,
)
from finetune.reporting.report import save_figure

SENTENCE = "The cat sat on the mat because it was tired"
FOCUS_WORD = "it"


def parse_args(argv=None) -> argparse.Namespace:
    parser = CommandParser(prog="finetune figures", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--run_dir", type=Path, help="a sentiment run folder: the fine-tuned model, and the scratch one in scratch/"
    )
    parser.add_argument("--out", type=Path, default=Path("docs/figures"), help="folder for the PNG and JSON files")
    return parser.parse_args(argv)


def positional_encoding_figure(out_dir: Path, n_positions: int = 100, d_model: int = 128) -> Path:
    """Heatmap of the sinusoid table: one row per position, one column per dimension."""
    import matplotlib.pyplot as plt

    table = sinusoidal_positional_encoding(n_positions, d_model)  # (P, C)
    fig, ax = plt.subplots(figsize=(8, 5))
    image = ax.imshow(table.numpy(), cmap="RdBu", vmin=-1, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_xlabel("dimension (even: sin, odd: cos; wavelength grows to the right)")
    ax.set_ylabel("position in the sequence")
    ax.set_title(f"Sinusoidal positional encoding, d_model = {d_model}")
    fig.colorbar(image, ax=ax)
    png = save_figure(fig, out_dir / "positional_encoding.png", dpi=120, bbox_inches="tight")
    atomic_write_json(png.with_suffix(".json"), {
        "formula": "PE(pos, 2i) = sin(pos / 10000^(2i/d_model)); PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model))",
        "n_positions": n_positions,
        "d_model": d_model,
        "table": [[round(v, 4) for v in row] for row in table.tolist()],
    })  # fmt: skip
    return png


def attention_maps(model, tokenizer):
    """Run `model` on SENTENCE; return its tokens, the index of FOCUS_WORD, and the attention of every layer
    averaged over heads, (L, T, T) (the model hands out one (1, nh, T, T) map per layer)."""
    import torch

    encoding = tokenizer(SENTENCE, return_tensors="pt")
    focus_index = encoding.char_to_token(SENTENCE.index(f" {FOCUS_WORD} ") + 1)  # the token that holds "it"
    with torch.no_grad():
        outputs = model(**encoding, output_attentions=True)
    per_layer = torch.stack(outputs.attentions)[:, 0].mean(dim=1)  # (L, T, T): batch item 0, mean over heads
    return tokenizer.convert_ids_to_tokens(encoding["input_ids"][0]), focus_index, per_layer


def attention_of(model, tokenizer, label: str, source: str) -> dict:
    """The tokens, the attention of FOCUS_WORD over the sentence in every layer, and the last layer's full
    matrix, all averaged over heads, as plain lists for JSON. `source` says where the model came from without a
    local path (the JSON is committed beside the figure)."""
    tokens, focus_index, per_layer = attention_maps(model, tokenizer)
    return {
        "label": label,
        "source": source,
        "tokens": tokens,
        "focus_index": focus_index,
        "focus_attention_per_layer": per_layer[:, focus_index].tolist(),  # (L, T)
        "last_layer_attention": per_layer[-1].tolist(),  # (T, T)
    }


def load_pretrained(model_dir: Path):
    """Any BERT-like classifier saved with its tokenizer. Eager attention: the fused kernels return no weights."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, attn_implementation="eager")
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


def load_scratch(model_dir: Path):
    from transformers import AutoTokenizer

    if not (model_dir / "config.json").exists():
        raise UserError(f"no from-scratch model in {model_dir}: train one with the sentiment recipe first")
    model = ScratchTransformerForSequenceClassification.from_pretrained(model_dir)
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


def random_scratch(tokenizer):
    """An untrained scratch classifier with the default sizes, seeded so the figure is reproducible."""
    import torch

    torch.manual_seed(0)
    config = scratch_config_for(
        "text-classification", vocab_size=len(tokenizer), num_labels=2, pad_token_id=tokenizer.pad_token_id
    )
    return ScratchTransformerForSequenceClassification(config).eval()


def attention_figure(panels: list[dict], out_dir: Path) -> Path:
    """One column per model: "it"'s attention per layer on top, the last layer's matrix below.

    Each row shares one colour scale, so a model that spreads its attention evenly (an untrained one) looks
    uniformly dark next to one that concentrates it.
    """
    import matplotlib.pyplot as plt

    top_max = max(max(map(max, p["focus_attention_per_layer"])) for p in panels)
    bottom_max = max(max(map(max, p["last_layer_attention"])) for p in panels)
    fig, axes = plt.subplots(2, len(panels), figsize=(7 * len(panels), 12), squeeze=False)
    for column, panel in enumerate(panels):
        tokens, focus = panel["tokens"], panel["focus_index"]
        top, bottom = axes[0, column], axes[1, column]
        per_layer = panel["focus_attention_per_layer"]
        image = top.imshow(per_layer, cmap="viridis", vmin=0, vmax=top_max, aspect="auto")
        fig.colorbar(image, ax=top)
        top.set_title(f'{panel["label"]}\nattention of "{tokens[focus]}" in each layer (mean over heads)')
        top.set_xticks(range(len(tokens)), tokens, rotation=90)
        top.set_yticks(range(len(per_layer)), [f"layer {i + 1}" for i in range(len(per_layer))])
        image = bottom.imshow(panel["last_layer_attention"], cmap="viridis", vmin=0, vmax=bottom_max)
        fig.colorbar(image, ax=bottom)
        bottom.set_title("last layer, mean over heads (row: query, column: key)")
        bottom.set_xticks(range(len(tokens)), tokens, rotation=90)
        bottom.set_yticks(range(len(tokens)), tokens)
    fig.tight_layout()
    png = save_figure(fig, out_dir / "attention_pretrained_vs_scratch.png", dpi=120, bbox_inches="tight")
    atomic_write_json(png.with_suffix(".json"), {"sentence": SENTENCE, "focus_word": FOCUS_WORD, "models": panels})
    return png


def load_base_model(run_dir: Path):
    """The checkpoint the run started from (config.yaml's `model`), as it was before fine-tuning."""
    import yaml
    from transformers import AutoModel

    config_file = run_dir / "config.yaml"
    if not config_file.is_file():
        raise UserError(
            f"--run_dir {run_dir} has no config.yaml, so the checkpoint it started from is unknown: "
            f"pass a folder written by finetune train"
        )
    source = resolve(yaml.safe_load(config_file.read_text())["model"])
    return _load(AutoModel.from_pretrained, source, "model", attn_implementation="eager").eval(), source


def before_after_figure(run_dir: Path, out_dir: Path) -> Path:
    """One row per layer: attention before fine-tuning, after it, after - before, and the scratch model's.

    The before/after columns share one colour scale (0 to the largest weight), the difference a symmetric one
    around 0 (red: more attention after fine-tuning, blue: less); each difference is titled with its mean
    absolute change, so the layers that fine-tuning moved most stand out.
    """
    import matplotlib.pyplot as plt

    base, source = load_base_model(run_dir)
    tuned, tokenizer = load_pretrained(run_dir)
    scratch, scratch_tokenizer = load_scratch(run_dir / "scratch")
    tokens, focus, before = attention_maps(base, tokenizer)
    _, _, after = attention_maps(tuned, tokenizer)
    scratch_tokens, _, trained_scratch = attention_maps(scratch, scratch_tokenizer)
    if before.shape != after.shape:
        raise UserError(
            f"the run's model has {after.shape[0]} layers but its config.yaml model {source.name!r} has "
            f"{before.shape[0]}: was the run trained from another checkpoint?"
        )
    difference = after - before
    layers = max(len(before), len(trained_scratch))
    top = float(max(before.max(), after.max()))
    spread = float(difference.abs().max()) or 1e-6
    fig, axes = plt.subplots(layers, 4, figsize=(17, 3.6 * layers), squeeze=False)
    columns = [
        ("pretrained, before fine-tuning", before, "viridis", 0, top),
        ("fine-tuned", after, "viridis", 0, top),
        ("difference: after - before", difference, "RdBu_r", -spread, spread),
        ("from scratch, after training", trained_scratch, "viridis", 0, float(trained_scratch.max())),
    ]
    for column, (title, maps, cmap, vmin, vmax) in enumerate(columns):
        names = scratch_tokens if column == 3 else tokens
        for layer in range(layers):
            ax = axes[layer, column]
            if layer >= len(maps):
                ax.axis("off")
                continue
            image = ax.imshow(maps[layer].numpy(), cmap=cmap, vmin=vmin, vmax=vmax)
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
            extra = f", mean |change| {maps[layer].abs().mean():.4f}" if column == 2 else ""
            ax.set_title(f"{title}\nlayer {layer + 1}{extra}", fontsize=9)
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
            ax.set_yticks(range(len(names)), names, fontsize=7)
    fig.suptitle(f'How fine-tuning changed attention on "{SENTENCE}" (mean over heads; row: query, column: key)')
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / layers))  # room for the title above the first row
    png = save_figure(fig, out_dir / "attention_before_after.png", dpi=80, bbox_inches="tight")
    atomic_write_json(png.with_suffix(".json"), {
        "sentence": SENTENCE, "tokens": tokens, "focus_index": focus, "base_model": source.origin,
        "before": before.tolist(), "after": after.tolist(), "difference": difference.tolist(),
        "mean_abs_change_per_layer": difference.abs().mean(dim=(1, 2)).tolist(),
        "scratch_tokens": scratch_tokens, "scratch_after_training": trained_scratch.tolist(),
    })  # fmt: skip
    return png


def attention_panels(run_dir: Path | None) -> list[dict]:
    if run_dir is not None:
        scratch_dir = run_dir / "scratch"
        pretrained, tokenizer = load_pretrained(run_dir)
        scratch, scratch_tokenizer = load_scratch(scratch_dir)
        return [
            attention_of(pretrained, tokenizer, "pretrained, fine-tuned", f"the run {Path(run_dir).name}"),
            attention_of(scratch, scratch_tokenizer, "from scratch, trained on the same data", "its scratch model"),
        ]

    minilm_dir = resolve_model("minilm")
    pretrained, tokenizer = load_pretrained(minilm_dir)
    return [
        attention_of(pretrained, tokenizer, "pretrained MiniLM, not fine-tuned", resolve("minilm").origin),
        attention_of(random_scratch(tokenizer), tokenizer, "from scratch, randomly initialised (untrained)", "random"),
    ]


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    with user_errors_exit():
        args = parse_args(argv)
        if args.run_dir is not None and not (args.run_dir / "config.json").exists():
            raise UserError(
                f"--run_dir {args.run_dir} holds no saved model (config.json): pass a finished run's folder"
            )
        if args.run_dir is not None:  # everything the figures need, checked before any file is written
            if not (args.run_dir / "scratch" / "config.json").exists():
                raise UserError(
                    f"no from-scratch model in {args.run_dir / 'scratch'}: train one with the sentiment recipe first"
                )
            if not (args.run_dir / "config.yaml").is_file():
                raise UserError(
                    f"--run_dir {args.run_dir} has no config.yaml, so the checkpoint it started from is "
                    f"unknown: pass a folder written by finetune train"
                )
        args.out.mkdir(parents=True, exist_ok=True)
        written = [positional_encoding_figure(args.out), attention_figure(attention_panels(args.run_dir), args.out)]
        if args.run_dir is not None:
            written.append(before_after_figure(args.run_dir, args.out))
        for png in written:
            print(f"wrote {png} and {png.with_suffix('.json').name}")
    return 0
