"""Encoder-decoder models: load one, generate with it, and read its cross-attention.

    load_seq2seq        any AutoModelForSeq2SeqLM (T5, BART, Marian, mBART, M2M) by name or folder, or a warm-started
                        encoder-decoder built from two encoder checkpoints (BERT2BERT: Rothe, Narayan & Severyn 2020),
                        with notes saying which weights are pretrained and which are new
    special_tokens      the decoder's start / pad / end tokens, set on config AND generation_config
    generation_kwargs   --num_beams & co. as generate() keyword arguments
    generate_ids        batched, length-sorted generation: output token ids in the order of the sources
    cross_attention     one source's decoder cross-attention (target x source, heads averaged), for the figure

The recipes (recipes/translation.py, recipes/summarization.py) and the verbs that read a run (predict, evaluate,
demo, export) use these, so that a run is decoded the same way everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from finetune.core.errors import UserError
from finetune.models.loading import ModelSource, load_pretrained, load_tokenizer, resolve

# Model types whose checkpoints are encoders only: they become both halves of a warm-started encoder-decoder.
ENCODER_ONLY = {
    "bert",
    "roberta",
    "xlm-roberta",
    "electra",
    "distilbert",
    "camembert",
    "mpnet",
    "deberta",
    "deberta-v2",
}


@dataclass
class Seq2SeqModel:
    model: object
    tokenizer: object
    source: ModelSource
    warm_started: bool  # built from encoder checkpoints: cross-attention (and perhaps the LM head) new
    notes: list = field(default_factory=list)  # which weights are pretrained and which are new, warnings


def load_seq2seq(name: str, decoder_model: Optional[str] = None, forced_bos_token: Optional[str] = None):
    """`name` as a seq2seq model (an encoder-decoder checkpoint), or warm-started when it is an encoder checkpoint
    (BERT family) or a `decoder_model` is given (its weights become the decoder, with cross-attention added)."""
    from transformers import AutoConfig

    source = resolve(name)
    tokenizer = load_tokenizer(source)
    model_config = load_pretrained(AutoConfig.from_pretrained, source, "config")
    if decoder_model is not None or model_config.model_type in ENCODER_ONLY:
        model, notes = warm_start(source, resolve(decoder_model) if decoder_model else source)
        loaded = Seq2SeqModel(model, tokenizer, source, warm_started=True, notes=notes)
    else:
        if not getattr(model_config, "is_encoder_decoder", False):
            raise UserError(
                f"{name!r} is a {model_config.model_type} model, neither an encoder-decoder (T5, BART, Marian, mBART) "
                f"nor an encoder to warm-start one from (BERT family): pass another --model"
            )
        from transformers import AutoModelForSeq2SeqLM

        model = load_pretrained(AutoModelForSeq2SeqLM.from_pretrained, source, "seq2seq model")
        notes = [f"{source.label}: every weight pretrained (an encoder-decoder checkpoint)"]
        loaded = Seq2SeqModel(model, tokenizer, source, warm_started=False, notes=notes)
    special_tokens(loaded.model, tokenizer)
    if forced_bos_token:
        token_id = tokenizer.convert_tokens_to_ids(forced_bos_token)
        if token_id is None or token_id == tokenizer.unk_token_id:
            raise UserError(
                f"--forced_bos_token {forced_bos_token!r} is not a token of {source.label}'s tokenizer: "
                f"use its language code (mBART: ro_RO, M2M100: __ro__)"
            )
        for where in (loaded.model.config, loaded.model.generation_config):
            where.forced_bos_token_id = token_id
    return loaded


def warm_start(encoder_source: ModelSource, decoder_source: ModelSource):
    """EncoderDecoderModel from two checkpoints: the encoder's weights as they are; the decoder's with a causal
    mask and a cross-attention sublayer added to every block (new, randomly initialised), as in BERT2BERT.

    transformers' own loading report (a table of missing keys) is silenced: the note returned says the same in
    one line."""
    from transformers import AutoModel, AutoModelForCausalLM, EncoderDecoderModel
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        return _warm_start(encoder_source, decoder_source, AutoModel, AutoModelForCausalLM, EncoderDecoderModel)
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def _warm_start(encoder_source, decoder_source, AutoModel, AutoModelForCausalLM, EncoderDecoderModel):
    encoder = load_pretrained(AutoModel.from_pretrained, encoder_source, "encoder")
    decoder, info = load_pretrained(
        AutoModelForCausalLM.from_pretrained,
        decoder_source,
        "decoder",
        is_decoder=True,
        add_cross_attention=True,
        output_loading_info=True,
    )
    model = EncoderDecoderModel(encoder=encoder, decoder=decoder)
    if getattr(encoder, "pooler", None) is not None:
        # BERT's pooler ([CLS] -> tanh) feeds nothing in an encoder-decoder: frozen, so the optimizer and several
        # processes (DDP refuses parameters without a gradient) skip it; kept, so the saved run reloads cleanly.
        encoder.pooler.requires_grad_(False)
    new = sorted(info["missing_keys"])
    new_count = sum(p.numel() for n, p in decoder.named_parameters() if n in set(new))
    cross = sum(1 for n in new if "crossattention" in n)
    others = [n for n in new if "crossattention" not in n]
    notes = [
        f"warm-started encoder-decoder (BERT2BERT, Rothe et al. 2020): encoder = {encoder_source.label} "
        f"(all weights pretrained), decoder = {decoder_source.label} (pretrained self-attention and feed-forward, "
        f"now causal); new, randomly initialised: {cross} cross-attention tensors"
        + (f" and {len(others)} others ({', '.join(others[:3])}{', ...' if len(others) > 3 else ''})" if others else "")
        + f", {new_count / 1e6:.1f}M of {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters"
    ]
    return model, notes


def special_tokens(model, tokenizer) -> None:
    """The decoder's start, pad and end tokens, on config AND generation_config (generate() reads the latter,
    the loss's shift-right the former). A warm-started BERT decoder starts from [CLS] and ends with [SEP]."""
    config = model.config
    start = getattr(config, "decoder_start_token_id", None)
    if start is None:
        start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    pad = config.pad_token_id if getattr(config, "pad_token_id", None) is not None else tokenizer.pad_token_id
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    if start is None or pad is None or eos is None:
        raise UserError(
            f"the tokenizer of {type(model).__name__} has no start/pad/end tokens to decode with: use a tokenizer "
            f"with [CLS]/[SEP] or <s>/</s> and a pad token"
        )
    for where in (config, model.generation_config):
        where.decoder_start_token_id, where.pad_token_id, where.eos_token_id = start, pad, eos
    if getattr(config, "is_encoder_decoder", False) and hasattr(config, "decoder"):
        config.decoder.pad_token_id = pad  # (EncoderDecoderModel's decoder config: its own loss ignores padding)


def is_uncased(tokenizer) -> bool:
    """True when the tokenizer lower-cases its input (MiniLM, bert-base-uncased): its outputs can't have capitals."""
    return decode(tokenizer, [tokenizer("Ab").input_ids])[0] == "ab"


def needs_prefix(model) -> bool:
    """T5-family models were trained with a task prefix ("translate English to German: ", "summarize: ")."""
    return getattr(model.config, "model_type", None) in ("t5", "mt5", "umt5", "longt5")


def generation_kwargs(
    max_target_length: int, num_beams: int = 1, length_penalty: float = 1.0, no_repeat_ngram_size: int = 0
) -> dict:
    """generate()'s keyword arguments for the recipes' flags: greedy with num_beams 1 (the default on a CPU)."""
    kwargs = {"max_new_tokens": max_target_length, "num_beams": num_beams, "do_sample": False}
    if num_beams > 1:
        kwargs["length_penalty"] = length_penalty
        kwargs["early_stopping"] = True
    if no_repeat_ngram_size:
        kwargs["no_repeat_ngram_size"] = no_repeat_ngram_size
    return kwargs


def generate_ids(
    model, tokenizer, sources: list[str], max_source_length: int, batch_size: int = 32, prefix: str = "", **kwargs
) -> list[list[int]]:
    """Output token ids for each source, in the sources' order (the decoder start token included).

    Batched and length-sorted: the longest sources first, so that each batch pads little and an out-of-memory
    error comes at once, not at the end. The model's train/eval mode is left as it was.
    """
    import torch

    order = sorted(range(len(sources)), key=lambda i: -len(sources[i]))
    out: list = [None] * len(sources)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = tokenizer(
                [prefix + sources[i] for i in chunk],
                max_length=max_source_length,
                truncation=True,
                padding=True,
                return_tensors="pt",
            ).to(device)
            generated = model.generate(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs
            )  # (b, T) padded with pad_token_id
            for i, ids in zip(chunk, generated.tolist()):
                out[i] = ids
    model.train(was_training)
    return out


def decode(tokenizer, ids: list[list[int]]) -> list[str]:
    return [text.strip() for text in tokenizer.batch_decode(ids, skip_special_tokens=True)]


def cross_attention(model, tokenizer, source: str, output_ids: list[int], max_source_length: int, prefix="") -> dict:
    """Where each output token looked in the source: the decoder's cross-attention (target x source), averaged
    over the heads of the last decoder block and over... nothing else (one sentence).

    output_ids: the generated ids, decoder start token first. Returns {source_tokens, target_tokens, weights}
    (weights[t][s]: how much output token t read source token s; each row sums to 1).
    """
    import torch

    pad = model.generation_config.pad_token_id
    ids = [i for i in output_ids if i != pad or i == output_ids[0]]  # the start token may be the pad (T5)
    batch = tokenizer(prefix + source, max_length=max_source_length, truncation=True, return_tensors="pt")
    device = next(model.parameters()).device
    decoder_input = torch.tensor([ids[:-1] if len(ids) > 1 else ids], device=device)  # (1, T): predicts ids[1:]
    was_training = model.training
    model.eval()
    with torch.no_grad(), eager_attention(model):
        outputs = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            decoder_input_ids=decoder_input,
            output_attentions=True,
        )
    model.train(was_training)
    if not outputs.cross_attentions:
        raise UserError(
            f"{type(model).__name__} returns no cross-attention weights: the figure needs a model that does"
        )
    weights = outputs.cross_attentions[-1][0].float().mean(dim=0)  # (T, S): the last block, heads averaged
    return {
        "source_tokens": tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist()),
        "target_tokens": tokenizer.convert_ids_to_tokens(ids[1:] if len(ids) > 1 else ids),
        "weights": [[round(w, 4) for w in row] for row in weights.tolist()],
    }


class eager_attention:
    """Attention weights exist only in the eager implementation (SDPA never forms them): switch while inside.

    Every Hugging Face model inside is switched (a warm-started encoder-decoder holds its encoder and decoder with
    configs of their own), and put back as it was on the way out."""

    def __init__(self, model):
        from transformers import PreTrainedModel

        self.switched = [
            (m, m.config._attn_implementation)
            for m in model.modules()
            if isinstance(m, PreTrainedModel) and getattr(m.config, "_attn_implementation", "eager") != "eager"
        ]

    def __enter__(self):
        for module, _ in self.switched:
            module.set_attn_implementation("eager")

    def __exit__(self, *exc):
        for module, before in reversed(self.switched):
            module.set_attn_implementation(before)
