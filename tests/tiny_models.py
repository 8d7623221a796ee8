"""Tiny models for tests. GPT-2 ones are built from config with the exact GPT-2 tokenizer (rebuilt offline from
openai-whisper's
ranks): the architecture and tokenizer of the real thing at a size that trains in seconds."""

from pathlib import Path


def gpt2_tokenizer():
    from transformers import AutoTokenizer

    from finetune.models.assets import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("gpt2-tokenizer"))


def tiny_gpt2(path: Path, kind: str = "lm", num_labels: int = 2, seed: int = 0) -> Path:
    """Save a 2-layer, 32-wide GPT-2 (LM head, or sequence classifier) and the GPT-2 tokenizer into `path`.

    Like the Hub's gpt2: the tokenizer has no pad token and the config no pad_token_id.
    """
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    tokenizer = gpt2_tokenizer()
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
