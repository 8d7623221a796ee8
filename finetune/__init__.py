"""finetune: fine-tune pretrained transformers with Accelerate and compare them with one built from scratch.

Importing this package is cheap on purpose: heavy libraries (torch, transformers, datasets, evaluate, peft)
are imported by the modules that need them, so `finetune --help` starts instantly.
"""

__version__ = "0.1.0"
