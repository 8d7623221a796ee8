"""finetune pretrain mlm|clm [--field value ...]: pretrain the from-scratch transformer (recipes/pretraining.py).

    finetune pretrain mlm                         # BERT's masked LM on the packaged corpora, about 10 minutes
    finetune pretrain clm --corpus kjv            # next-token prediction for the decoder-only LM
    finetune pretrain mlm --resume                # continue an interrupted run from its last checkpoint

Then every recipe's `--scratch_init RUN_DIR` starts its scratch model from the weights this wrote.
"""

from __future__ import annotations

import importlib

from finetune.core.errors import UserError

OBJECTIVES = ("mlm", "clm")


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    objective, rest = argv[0], argv[1:]
    if objective not in OBJECTIVES:
        raise UserError(f"finetune pretrain needs an objective first: mlm or clm (got {objective!r})")
    recipe = importlib.import_module("recipes.pretraining")  # (imported here: `finetune --help` stays fast)
    flags = ["--objective", objective]
    if objective == "clm" and not any(a.split("=")[0] in ("--output_dir", "--config") for a in rest):
        flags += ["--output_dir", "runs/pretrain_clm"]
    return recipe.main([*flags, *rest])
