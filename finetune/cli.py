"""The `finetune` command: parse the verb, hand the rest to the module that does the work.

    finetune train TASK [--config FILE] [--field value ...]   run recipes/TASK.py (sentiment, text_generation, ...)
    finetune predict RUN_DIR INPUT [INPUT ...]               classify texts (or images) with a saved model
    finetune predict RUN_DIR --file INPUT [--output FILE]    ... every row of a csv/jsonl/txt file, a folder, or -
    finetune evaluate RUN_DIR [--dataset SOURCE] [--split S]  score a saved model on labelled data
    finetune export RUN_DIR --format onnx [--quantize dynamic-int8]   ONNX model + tokenizer, checked by ONNX Runtime
    finetune demo RUN_DIR [--port 7860]                      a Gradio app for the model, on this machine
    finetune generate RUN_DIR PROMPT                         continue a prompt with a saved causal LM
    finetune merge RUN_DIR                                   merge a LoRA adapter into its base model
    finetune push RUN_DIR --repo_id NAME                     upload a run to the Hugging Face Hub
    finetune figures [--run_dir RUN_DIR]                     draw the teaching figures for docs/
    finetune search TASK [--n_trials N] [--storage URL]       hyperparameter search with Optuna (a study database)
    finetune compare RUN_DIR [RUN_DIR ...] [--output DIR]    one table and one chart across finished runs
    finetune clean RUN_DIR [RUN_DIR ...] [--dry_run]         remove a finished run's checkpoints, print what it freed
    finetune pretrain mlm|clm [--corpus tweets,conll,kjv]    pretrain the from-scratch transformer (--scratch_init)

Only argparse is imported here, so `finetune --help` answers at once; each verb imports what it needs.
"""

from __future__ import annotations

import importlib
import sys

from finetune.core.errors import UserError, user_errors_exit
from finetune.tasks import registry

VERBS = {
    "predict": "finetune.commands.predict",
    "evaluate": "finetune.commands.evaluate",
    "export": "finetune.commands.export",
    "demo": "finetune.commands.demo",
    "generate": "finetune.commands.generate",
    "merge": "finetune.commands.merge",
    "push": "finetune.commands.push",
    "figures": "finetune.commands.figures",
    "search": "finetune.commands.search",
    "compare": "finetune.commands.compare",
    "study": "finetune.commands.study",
    "clean": "finetune.commands.clean",
    "pretrain": "finetune.commands.pretrain",
}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    verb, rest = argv[0], argv[1:]
    with user_errors_exit():
        if verb == "train":
            if not rest or rest[0].startswith("-"):
                raise UserError(f"finetune train needs a task: one of {', '.join(registry.names())}")
            return registry.get(rest[0]).load().main(rest[1:]) or 0
        if verb not in VERBS:
            raise UserError(f"unknown command {verb!r}: use one of train, {', '.join(VERBS)} (finetune --help)")
        return importlib.import_module(VERBS[verb]).main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
