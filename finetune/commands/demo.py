"""`finetune demo RUN_DIR [--port 7860] [--share false]`: a Gradio app for a trained model, on this machine.

    finetune demo runs/sentiment               # http://127.0.0.1:7860: type a text, see the label probabilities
    finetune demo runs/image_classification    # upload an image
    finetune demo runs/text_generation         # a prompt box with generation settings
    finetune demo runs/question_answering      # a question and a context: the answer highlighted in the context
    finetune demo runs/translation             # a source box: the output and its cross-attention heatmap

Text classifiers show the label probabilities as bars and the attention of the last layer (or the layer and
head you choose; head 0 = the mean of all heads) as a token-by-token heatmap. Causal LMs get a prompt box with
max new tokens, sampling, temperature and seed. Question answering shows the context with the answer
highlighted (the run's own windows and n-best search), and the attention from the question's tokens to the
context's tokens in the window that holds the answer. Translation and summarization runs write their output
(decoded as the run's test was) and show the decoder's cross-attention: which source token each output token read.
The headline test metrics come from results.json. Where the run
has a from-scratch model (RUN_DIR/scratch), it answers the same input side by side.

The app listens on 127.0.0.1 only (this machine); --share true asks Gradio for a public link (needs internet).
The same app answers programs through gradio_client: Client("http://127.0.0.1:7860").predict(text, layer, head,
api_name="/classify").
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from finetune.core.errors import CommandParser, UserError, user_errors_exit
from finetune.data.images import to_rgb
from finetune.data.qa_windows import context_first, encode_pairs
from finetune.models.generate import generate_texts
from finetune.models.seq2seq import cross_attention, decode, generate_ids
from finetune.reporting.attention import alignment_array
from finetune.tasks.runs import open_run

HOST = "127.0.0.1"


# ---- what the app computes (plain functions: testable without a browser) ----------------------------------------


def classify_text(run, text: str, layer: int = -1, head: int = 0):
    """({label: probability}, attention heatmap as an RGB array or None) for one text."""
    import torch

    if not text or not text.strip():
        return {}, None
    encoded = run.processor(text, truncation=True, max_length=run.max_length, return_tensors="pt")
    with torch.no_grad():
        outputs = run.model(**encoded, output_attentions=True)
    probabilities = outputs.logits.softmax(-1)[0].tolist()
    labels = {run.label_names[i]: p for i, p in enumerate(probabilities)}
    tokens = run.processor.convert_ids_to_tokens(encoded["input_ids"][0])
    return labels, attention_heatmap(outputs.attentions, tokens, layer, head)


def attention_heatmap(attentions, tokens: list[str], layer: int, head: int):
    """The chosen layer's attention (head >= 1: that head; 0: the mean over heads) as an RGB image array."""
    if not attentions:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers = len(attentions)
    index = layer if layer < 0 else min(layer, layers) - 1  # layers are numbered from 1 in the app; -1 = last
    weights = attentions[index][0]  # (heads, T, T)
    heads = weights.shape[0]
    matrix = weights.mean(0) if head <= 0 else weights[min(head, heads) - 1]
    size = min(2 + 0.32 * len(tokens), 12)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(matrix.float().numpy(), cmap="viridis", vmin=0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=8)
    ax.set_yticks(range(len(tokens)), tokens, fontsize=8)
    which = f"head {min(head, heads)}" if head > 0 else f"mean of {heads} heads"
    ax.set(xlabel="attends to (key)", ylabel="token (query)", title=f"layer {index % layers + 1} of {layers}, {which}")
    fig.tight_layout()
    fig.canvas.draw()
    array = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return array


def answer_question(run, question: str, context: str, layer: int = -1, head: int = 0):
    """(context as [(piece, "answer" or None)] for a HighlightedText, a one-line summary, the attention from the
    question's tokens to the context's tokens as an RGB array) for one question."""
    import torch

    if not (question or "").strip() or not (context or "").strip():
        return [(context or "", None)], "give a question and a context", None
    answer = run.kind.answer(run, [question], [context])[0]
    if answer["start"] < 0:
        pieces, summary = [(context, None)], f"no answer in this context (p = {answer['probability']:.3f})"
    else:
        s, e = answer["start"], answer["end"]
        pieces = [(context[:s], None), (context[s:e], "answer"), (context[e:], None)]
        summary = f"{answer['text']!r}  (p = {answer['probability']:.3f} among the n-best, characters {s}-{e})"
    settings = run.kind.settings(run)
    enc = encode_pairs(run.processor, [question], [context], settings["max_length"], settings["doc_stride"],
                       return_tensors="pt", padding=True)  # fmt: skip
    context_id = 0 if context_first(run.processor) else 1
    window = 0
    for w in range(len(enc["input_ids"])):  # the window that holds the answer (the first, without one)
        spans = [o for o, sid in zip(enc["offset_mapping"][w].tolist(), enc.sequence_ids(w)) if sid == context_id]
        if answer["start"] >= 0 and spans and spans[0][0] <= answer["start"] and answer["end"] <= spans[-1][1]:
            window = w
            break
    inputs = {k: enc[k][window : window + 1] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    with torch.no_grad():
        outputs = run.model(**inputs, output_attentions=True)
    tokens = run.processor.convert_ids_to_tokens(inputs["input_ids"][0])
    ids = enc.sequence_ids(window)
    rows = [i for i, sid in enumerate(ids) if sid == 1 - context_id]  # the question's tokens
    columns = [i for i, sid in enumerate(ids) if sid == context_id]  # the context's tokens in this window
    figure = question_attention(outputs.attentions, tokens, rows, columns, layer, head)
    return pieces, summary, figure


def question_attention(attentions, tokens, rows, columns, layer: int, head: int):
    """The chosen layer's attention from the question's tokens (rows) to the context's tokens (columns), as an RGB
    image array (head >= 1: that head; 0: the mean over heads)."""
    if not attentions or not rows or not columns:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers = len(attentions)
    index = layer if layer < 0 else min(layer, layers) - 1
    weights = attentions[index][0]  # (heads, T, T)
    heads = weights.shape[0]
    matrix = (weights.mean(0) if head <= 0 else weights[min(head, heads) - 1])[rows][:, columns]  # (Q, C)
    fig, ax = plt.subplots(figsize=(min(3 + 0.16 * len(columns), 24), 1.5 + 0.3 * len(rows)))
    image = ax.imshow(matrix.float().numpy(), cmap="viridis", vmin=0, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.01)
    ax.set_yticks(range(len(rows)), [tokens[i] for i in rows], fontsize=8)
    if len(columns) <= 120:
        ax.set_xticks(range(len(columns)), [tokens[i] for i in columns], rotation=90, fontsize=7)
    which = f"head {min(head, heads)}" if head > 0 else f"mean of {heads} heads"
    title = f"attention from the question to the context, layer {index % layers + 1} of {layers}, {which}"
    ax.set(xlabel="context token (key)", ylabel="question token (query)", title=title)
    fig.tight_layout()
    fig.canvas.draw()
    array = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return array


def write_text(run, text: str):
    """(the output text, its cross-attention heatmap as an RGB array) for one source, decoded as the run's test."""
    if not text or not text.strip():
        return "", None
    settings = run.kind.generation(run)
    prefix, max_source_length = settings.pop("prefix"), settings.pop("max_source_length")
    ids = generate_ids(run.model, run.processor, [text], max_source_length, 1, prefix, **settings)[0]
    attention = cross_attention(run.model, run.processor, text, ids, max_source_length, prefix)
    return decode(run.processor, [ids])[0], alignment_array(attention)


def classify_image(run, image):
    import torch

    if image is None:
        return {}
    pixels = run.processor(images=[to_rgb(image)], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probabilities = run.model(pixel_values=pixels).logits.softmax(-1)[0].tolist()
    return {run.label_names[i]: p for i, p in enumerate(probabilities)}


def headline(run) -> str:
    """Markdown: the test metrics of every model in results.json."""
    models = run.results.get("models", [])
    if not models:
        return f"**{run.path.name}**: {run.kind.name} (no results.json beside it)"
    lines = [
        f"**{run.results.get('task', run.kind.name)}** on "
        f"`{Path(str(run.results.get('dataset', '?'))).name}`, test split:",
        "",
    ]
    for m in models:
        metrics = ", ".join(f"{k} {v:.4f}" for k, v in m.get("test", {}).items())
        lines.append(f"- {m.get('name')} ({m.get('role')}): {metrics}")
    return "\n".join(lines)


# ---- the app ----------------------------------------------------------------------------------------------------


def build_app(run_dir, layer: int = -1, head: int = 0):
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline machine
    import gradio as gr

    run = open_run(run_dir, verb="finetune demo", attentions=True)
    runs = [run] + ([scratch] if (scratch := _scratch(run)) else [])
    names = [r.role for r in runs]
    with gr.Blocks(title=f"finetune demo: {run.root.name}") as app:
        gr.Markdown(f"# {run.root.name}\n{headline(run)}")
        if run.kind.name == "text-classification":
            _text_classifier(gr, runs, names, layer, head)
        elif run.kind.name == "image-classification":
            _image_classifier(gr, runs, names)
        elif run.kind.name == "text-generation":
            _text_generator(gr, runs, names)
        elif run.kind.name == "question-answering":
            _question_answerer(gr, runs, names, layer, head)
        elif run.kind.name == "text2text-generation":
            _text_writer(gr, runs, names)
        else:  # a kind finetune.tasks.runs knows but the demo does not draw yet
            raise UserError(f"finetune demo has no page for {run.kind.name} models yet")
    return app


def _scratch(run):
    try:
        return run.scratch()
    except UserError:
        return None


def _text_classifier(gr, runs, names, layer, head):
    layers = max(
        getattr(r.model.config, "num_hidden_layers", None) or getattr(r.model.config, "n_layers", 1) for r in runs
    )
    heads = max(
        getattr(r.model.config, "num_attention_heads", None) or getattr(r.model.config, "n_heads", 1) for r in runs
    )
    text = gr.Textbox(label="text", lines=3, placeholder="type a sentence", elem_id="input-text")
    with gr.Row():
        layer_choice = gr.Slider(-1, layers, value=layer, step=1, label="attention layer (-1 = last)")
        head_choice = gr.Slider(0, heads, value=head, step=1, label="head (0 = mean of heads)")
    button = gr.Button("Classify", variant="primary", elem_id="classify-button")
    outputs = []
    with gr.Row():
        for name in names:
            with gr.Column():
                outputs.append(gr.Label(label=f"{name}: label probabilities", elem_id=f"label-{name}"))
                outputs.append(gr.Image(label=f"{name}: attention", elem_id=f"attention-{name}", type="numpy"))

    def classify(value, chosen_layer, chosen_head):
        results = []
        for r in runs:
            labels, heatmap = classify_text(r, value, int(chosen_layer), int(chosen_head))
            results += [labels, heatmap]
        return results

    button.click(classify, [text, layer_choice, head_choice], outputs, api_name="classify")
    text.submit(classify, [text, layer_choice, head_choice], outputs)


def _question_answerer(gr, runs, names, layer, head):
    layers = max(
        getattr(r.model.config, "num_hidden_layers", None) or getattr(r.model.config, "n_layers", 1) for r in runs
    )
    heads = max(
        getattr(r.model.config, "num_attention_heads", None) or getattr(r.model.config, "n_heads", 1) for r in runs
    )
    question = gr.Textbox(label="question", lines=1, elem_id="input-question")
    context = gr.Textbox(label="context", lines=8, elem_id="input-context")
    with gr.Row():
        layer_choice = gr.Slider(-1, layers, value=layer, step=1, label="attention layer (-1 = last)")
        head_choice = gr.Slider(0, heads, value=head, step=1, label="head (0 = mean of heads)")
    button = gr.Button("Answer", variant="primary", elem_id="answer-button")
    outputs = []
    for name in names:
        with gr.Column():
            outputs.append(gr.Textbox(label=f"{name}: answer", elem_id=f"answer-{name}"))
            outputs.append(gr.HighlightedText(label=f"{name}: the answer in the context", elem_id=f"context-{name}",
                                              color_map={"answer": "green"}))  # fmt: skip
            outputs.append(gr.Image(label=f"{name}: attention, question -> context", elem_id=f"attention-{name}",
                                    type="numpy"))  # fmt: skip

    def answer(q, c, chosen_layer, chosen_head):
        results = []
        for r in runs:
            pieces, summary, figure = answer_question(r, q, c, int(chosen_layer), int(chosen_head))
            results += [summary, pieces, figure]
        return results

    button.click(answer, [question, context, layer_choice, head_choice], outputs, api_name="answer")


def _image_classifier(gr, runs, names):
    image = gr.Image(label="image", type="pil", elem_id="input-image")
    button = gr.Button("Classify", variant="primary", elem_id="classify-button")
    with gr.Row():
        outputs = [gr.Label(label=f"{name}: label probabilities", elem_id=f"label-{name}") for name in names]
    button.click(lambda value: [classify_image(r, value) for r in runs], [image], outputs, api_name="classify")


def _text_generator(gr, runs, names):
    prompt = gr.Textbox(
        label="prompt", lines=2, elem_id="input-text", value=(runs[0].results.get("prompts") or [""])[0]
    )
    with gr.Row():
        max_new_tokens = gr.Slider(1, 200, value=40, step=1, label="max new tokens")
        do_sample = gr.Checkbox(value=True, label="sample (else greedy)")
        temperature = gr.Slider(0.1, 2.0, value=0.8, step=0.05, label="temperature")
        seed = gr.Number(value=0, precision=0, label="seed")
    button = gr.Button("Generate", variant="primary", elem_id="generate-button")
    with gr.Row():
        outputs = [gr.Textbox(label=f"{name}: continuation", lines=6, elem_id=f"text-{name}") for name in names]

    def generate(value, n, sample, temp, seed_value):
        return [
            generate_texts(
                r.model,
                r.processor,
                [value],
                int(n),
                do_sample=bool(sample),
                temperature=float(temp),
                seed=int(seed_value or 0),
            )[0]
            for r in runs
        ]

    button.click(generate, [prompt, max_new_tokens, do_sample, temperature, seed], outputs, api_name="generate")


def _text_writer(gr, runs, names):
    text = gr.Textbox(label="source", lines=3, placeholder="Thou shalt not kill.", elem_id="input-text")
    button = gr.Button("Write", variant="primary", elem_id="write-button")
    outputs = []
    with gr.Row():
        for name in names:
            with gr.Column():
                outputs.append(gr.Textbox(label=f"{name}: output", lines=3, elem_id=f"text-{name}"))
                outputs.append(gr.Image(label=f"{name}: cross-attention", elem_id=f"attention-{name}", type="numpy"))

    def write(value):
        return [piece for r in runs for piece in write_text(r, value)]

    button.click(write, [text], outputs, api_name="write")
    text.submit(write, [text], outputs)


def check_port(port: int) -> None:
    """Fail in one line if the port cannot be had, before anything loads."""
    if not 0 < port < 65536:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError as err:
            raise UserError(
                f"port {port} on {HOST} is in use or not allowed ({err.strerror}): pass --port N with a free port"
            ) from None


def main(argv=None) -> int:
    parser = CommandParser(prog="finetune demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory (or its scratch/ or merged/ folder)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--share", type=_boolean, default=False, help="true: also a public gradio.live link (needs internet)"
    )
    parser.add_argument("--layer", type=int, default=-1, help="attention layer shown first (1 = first, -1 = last)")
    parser.add_argument("--head", type=int, default=0, help="attention head shown first (0 = mean of all heads)")
    with user_errors_exit():
        args = parser.parse_args(argv)
        check_port(args.port)
        app = build_app(args.run_dir, args.layer, args.head)
        print(f"finetune demo: http://{HOST}:{args.port}  (Ctrl-C stops it)", flush=True)
        app.launch(server_name=HOST, server_port=args.port, share=args.share, ssr_mode=False, quiet=True)
    return 0


def _boolean(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise UserError(f"--share takes true or false, not {value!r}")


if __name__ == "__main__":
    raise SystemExit(main())
