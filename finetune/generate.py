"""`finetune generate RUN_DIR "prompt"`: continue a prompt with a saved causal LM.

    finetune generate runs/text_generation "positive:"                       # greedy
    finetune generate runs/text_generation "negative:" --do_sample --seed 3 --temperature 0.8 --top_k 50
    finetune generate runs/text_generation/scratch "positive:"               # the from-scratch model
    finetune generate runs/text_generation/merged "positive:"                # after `finetune merge`

RUN_DIR may hold a full model (config.json + weights), a LoRA adapter (adapter_config.json: its base model is
loaded from the local folder the adapter names), or a from-scratch model. Sampling is seeded: the same seed
gives the same text.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from finetune.errors import CommandParser, UserError, user_errors_exit


def load_causal_lm(run_dir: Path):
    """(model in eval mode, tokenizer) from a run directory (full model, LoRA adapter or scratch model)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    import finetune.scratch  # noqa: F401  registers the from-scratch models with the Auto classes
    from finetune.lora import is_adapter_dir, load_adapter_run, read_adapter_config

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist: pass the --output_dir of a finished run")
    if is_adapter_dir(run_dir):
        if read_adapter_config(run_dir).get("task_type") != "CAUSAL_LM":
            raise UserError(f"the adapter in {run_dir} is not a causal LM's: `finetune generate` needs a "
                            "text_generation run (use `finetune predict` for classifiers)")
        model, _ = load_adapter_run(run_dir)
    else:
        if not (run_dir / "config.json").is_file():
            raise UserError(f"{run_dir} holds no saved model (no config.json or adapter_config.json): pass a run "
                            "directory written by `finetune train text_generation`")
        config = AutoConfig.from_pretrained(run_dir)
        if not any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in (config.architectures or [])):
            raise UserError(f"{run_dir} holds a {', '.join(config.architectures or ['?'])}, not a causal LM: "
                            "`finetune generate` needs a text_generation run (use `finetune predict` for classifiers)")
        model = AutoModelForCausalLM.from_pretrained(run_dir)
    if not (run_dir / "tokenizer_config.json").is_file():
        raise UserError(f"{run_dir} holds no tokenizer (tokenizer_config.json): save one beside the model")
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    model.eval()
    return model, tokenizer


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
    settings = dict(max_new_tokens=max_new_tokens, do_sample=do_sample, pad_token_id=pad,
                    eos_token_id=tokenizer.eos_token_id)
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
            raise UserError(f"prompt ({ids.shape[1]} tokens) + --max_new_tokens {max_new_tokens} exceeds the model's "
                            f"context of {limit} tokens: shorten the prompt or lower --max_new_tokens")
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed + i)  # one stream per prompt: equal draws would hide what the prompt changes
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=generation_config)
        texts.append(prompt + tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    return texts


def main(argv=None) -> int:
    parser = CommandParser(prog="finetune generate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a text_generation run directory (or its scratch/ or merged/)")
    parser.add_argument("prompts", nargs="+", help="one or more prompts")
    parser.add_argument("--max_new_tokens", type=int, default=40)
    parser.add_argument("--do_sample", action="store_true", help="sample (default: greedy)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=50)
    parser.add_argument("--top_p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of plain text")
    with user_errors_exit():
        args = parser.parse_args(argv)
        model, tokenizer = load_causal_lm(args.run_dir)
        texts = generate_texts(model, tokenizer, args.prompts, args.max_new_tokens, args.do_sample,
                               args.temperature, args.top_k, args.top_p, args.seed)
        for prompt, text in zip(args.prompts, texts):
            print(json.dumps({"prompt": prompt, "text": text}) if args.json else text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
