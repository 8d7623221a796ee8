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

from finetune.core.errors import CommandParser, UserError, user_errors_exit
from finetune.models.generate import generate_texts
from finetune.models.lora import is_adapter_dir, load_adapter_run, read_adapter_config


def load_causal_lm(run_dir: Path):
    """(model in eval mode, tokenizer) from a run directory (full model, LoRA adapter or scratch model)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    # here, not at the top: transformers' modelling code (~2 s), only once a model is opened
    import finetune.models.scratch  # noqa: F401  registers the from-scratch models with the Auto classes

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist: pass the --output_dir of a finished run")
    if is_adapter_dir(run_dir):
        if read_adapter_config(run_dir).get("task_type") != "CAUSAL_LM":
            raise UserError(
                f"the adapter in {run_dir} is not a causal LM's: `finetune generate` needs a "
                "text_generation run (use `finetune predict` for classifiers)"
            )
        model, _ = load_adapter_run(run_dir)
    else:
        if not (run_dir / "config.json").is_file():
            raise UserError(
                f"{run_dir} holds no saved model (no config.json or adapter_config.json): pass a run "
                "directory written by `finetune train text_generation`"
            )
        config = AutoConfig.from_pretrained(run_dir)
        if not any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in (config.architectures or [])):
            raise UserError(
                f"{run_dir} holds a {', '.join(config.architectures or ['?'])}, not a causal LM: "
                "`finetune generate` needs a text_generation run (use `finetune predict` for classifiers)"
            )
        model = AutoModelForCausalLM.from_pretrained(run_dir)
    if not (run_dir / "tokenizer_config.json").is_file():
        raise UserError(f"{run_dir} holds no tokenizer (tokenizer_config.json): save one beside the model")
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    model.eval()
    return model, tokenizer


def main(argv=None) -> int:
    parser = CommandParser(
        prog="finetune generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
        texts = generate_texts(
            model,
            tokenizer,
            args.prompts,
            args.max_new_tokens,
            args.do_sample,
            args.temperature,
            args.top_k,
            args.top_p,
            args.seed,
        )
        for prompt, text in zip(args.prompts, texts):
            print(json.dumps({"prompt": prompt, "text": text}) if args.json else text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
