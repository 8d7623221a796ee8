"""`finetune merge RUN_DIR [--output DIR]`: fold a LoRA adapter into its base model, a plain model that
from_pretrained and pipeline() load without peft. Adapters themselves: finetune/models/lora.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

from finetune.core.atomic_io import atomic_dir
from finetune.core.errors import CommandParser, UserError, user_errors_exit
from finetune.core.run_directory import writing_into
from finetune.models.lora import is_adapter_dir, load_adapter_run


def merge(run_dir, output: Optional[Path] = None) -> Path:
    """Fold the adapter into the base weights and save a plain model (+ tokenizer) to output (RUN_DIR/merged).

    Written into a temporary folder and renamed into place: `output` is the old complete folder or the new one.
    """

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist: pass the --output_dir of a finished --lora run")
    if not is_adapter_dir(run_dir):
        raise UserError(
            f"{run_dir} holds no LoRA adapter (adapter_config.json): only runs trained with --lora "
            "need merging; a full fine-tune already is a plain model"
        )
    output = Path(output) if output is not None else run_dir / "merged"
    if output.resolve() == run_dir.resolve():
        raise UserError(
            "--output must differ from the run directory (the merged model would sit beside the "
            "adapter): choose another folder"
        )
    model, _ = load_adapter_run(run_dir)
    merged = model.merge_and_unload()
    # RUN_DIR/merged is the run's too: written under the run's lock and recorded in its manifest, so that
    # --overwrite may replace it with the rest (finetune/core/run_directory.py: writing_into).
    with writing_into(output, "finetune merge"), atomic_dir(output) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        for name in os.listdir(run_dir):  # the tokenizer / processor, as saved with the adapter
            if name.startswith(
                (
                    "tokenizer",
                    "special_tokens_map",
                    "vocab",
                    "merges",
                    "added_tokens",
                    "chat_template",
                    "preprocessor_config",
                    "processor_config",
                    "spiece",
                )
            ):
                if (run_dir / name).is_file():
                    shutil.copy2(run_dir / name, tmp / name)
    return output


def main(argv=None) -> int:
    parser = CommandParser(
        prog="finetune merge",
        description="Merge a LoRA adapter into its base model "
        "and save a plain model that from_pretrained / pipeline load.",
    )
    parser.add_argument("run_dir", type=Path, help="a run directory trained with --lora")
    parser.add_argument(
        "--output", type=Path, default=None, help="where to write the merged model (default RUN_DIR/merged)"
    )
    with user_errors_exit():
        args = parser.parse_args(argv)
        out = merge(args.run_dir, args.output)
        print(f"merged model written to {out}  (from_pretrained({str(out)!r}) loads it; no peft needed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
