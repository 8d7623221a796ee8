"""Tiny models for tests. GPT-2 ones are built from config with GPT-2's tokenizer (rebuilt offline from
openai-whisper's ranks), cut to its first 1,000 merges unless a test needs every one of GPT-2's ids: the
architecture and tokenizer of the real thing at a size that trains in seconds."""

from pathlib import Path


def gpt2_tokenizer():
    from transformers import AutoTokenizer

    from finetune.models.assets import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("gpt2-tokenizer"))


def small_gpt2_tokenizer(merges: int = 1000):
    """GPT-2's tokenizer with only its first `merges` BPE merges: the same byte-level BPE, pre-tokenizer, decoder and
    <|endoftext|> (bos = eos = unk, no pad), with 256 + merges + 1 tokens instead of 50,257.

    GPT-2 numbers its tokens by merge rank (the 256 bytes, then merge i makes token 256 + i), so the first merges
    and the tokens below 256 + merges are a complete tokenizer; it only cuts text into more, shorter pieces. A tiny
    model's cost is its vocabulary (a 32-wide model spends most of a step on 50,257 logits per token): this one
    trains several times faster, and tests that need GPT-2's exact ids use `gpt2_tokenizer()`."""
    import json

    from tokenizers import Tokenizer
    from transformers import GPT2TokenizerFast

    full = gpt2_tokenizer()
    spec = json.loads(full.backend_tokenizer.to_str())
    eos = full.eos_token
    keep = 256 + merges
    spec["model"]["merges"] = spec["model"]["merges"][:merges]
    vocab = {token: i for token, i in spec["model"]["vocab"].items() if i < keep}
    assert len(vocab) == keep
    vocab[eos] = keep
    spec["model"]["vocab"] = vocab
    for added in spec["added_tokens"]:
        assert added["content"] == eos
        added["id"] = keep
    return GPT2TokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        bos_token=eos,
        eos_token=eos,
        unk_token=eos,
        model_max_length=full.model_max_length,
    )


def tiny_gpt2(path: Path, kind: str = "lm", num_labels: int = 2, seed: int = 0, full_vocabulary: bool = False) -> Path:
    """Save a 2-layer, 32-wide GPT-2 (LM head, or sequence classifier) and GPT-2's tokenizer into `path`: with its
    first 1,000 merges (`small_gpt2_tokenizer`), or all 50,257 tokens with `full_vocabulary`.

    Like the Hub's gpt2: the tokenizer has no pad token and the config no pad_token_id.
    """
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    tokenizer = gpt2_tokenizer() if full_vocabulary else small_gpt2_tokenizer()
    assert tokenizer.pad_token is None
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=128,
        num_labels=num_labels,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = (GPT2LMHeadModel if kind == "lm" else GPT2ForSequenceClassification)(config)
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_vit(path: Path) -> Path:
    """A 2-block, 32-wide ViT at 32x32 (patches of 8), with a PIL-backend ViT image processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=5,
    )
    ViTForImageClassification(config).save_pretrained(path)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    return path
