"""Text from a causal LM: one seeded stream per prompt, the prompt kept (recipes, the demo and `finetune generate`)."""

from __future__ import annotations

from typing import Optional

from finetune.core.errors import UserError


def generate_texts(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 40,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: Optional[int] = 50,
    top_p: Optional[float] = None,
    seed: int = 0,
) -> list[str]:
    """Prompt + continuation for each prompt, one at a time (no padding to reason about), seeded (prompt i
    samples with seed + i).

    Greedy when do_sample is False. The global RNG is left as it was (a training run that generates samples
    before it trains is not perturbed by them).
    """
    import torch
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise UserError(f"--max_new_tokens must be at least 1, got {max_new_tokens}")
    if do_sample and temperature <= 0:
        raise UserError(f"--temperature must be positive, got {temperature}")
    if do_sample and top_k is not None and top_k < 0:
        raise UserError(f"--top_k must be at least 0 (0: no top-k filtering), got {top_k}")
    if do_sample and top_p is not None and not 0 < top_p <= 1:
        raise UserError(f"--top_p must be in (0, 1], got {top_p}")
    limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", None)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    settings = dict(
        max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id
    )
    if do_sample:
        settings.update(temperature=temperature, top_k=top_k, top_p=top_p)
    else:  # no sampling knobs at all: transformers warns about unused ones
        settings.update(temperature=None, top_k=None, top_p=None)
    generation_config = GenerationConfig(**settings)
    device = next(model.parameters()).device
    texts = []
    for i, prompt in enumerate(prompts):
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
        if ids.shape[1] == 0:
            ids = torch.tensor([[tokenizer.eos_token_id]], device=device)  # an empty prompt: start a new text
        if limit is not None and ids.shape[1] + max_new_tokens > limit:
            raise UserError(
                f"prompt ({ids.shape[1]} tokens) + --max_new_tokens {max_new_tokens} exceeds the model's "
                f"context of {limit} tokens: shorten the prompt or lower --max_new_tokens"
            )
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed + i)  # one stream per prompt: equal draws would hide what the prompt changes
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=generation_config
            )
        texts.append(prompt + tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return texts
