"""The GPT-2 tokenizer rebuilt from openai-whisper's gpt2.tiktoken: known ids, round trips, and (when tiktoken
is installed) id-for-id equality with tiktoken's own BPE over the same ranks."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib.util
import inspect
import json
from pathlib import Path

import pytest

from finetune.models.convert import gpt2_tokenizer

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("whisper") is None, reason="needs openai-whisper (pip install --no-deps openai-whisper)"
)

UNICODE_TEXTS = [
    "Hello world",
    "  leading spaces, trailing spaces   ",
    "Tabs\tand\nnewlines\r\n\n\n  mixed \t\n",
    "Numbers 1234567890 3.14159 -42 1,000,000 0x1F",
    "Contractions: I'm, you're, they've, she'll, we'd, it's, DON'T",
    "Ünïcödé àccents: naïve café, Straße, Ærøskøbing",
    "中文测试：机器学习很有趣。日本語のテキスト、한국어 텍스트",
    "Emoji 😀🎉👩‍👩‍👧‍👦 flags 🇫🇷🇯🇵 and ⚡️",
    "العربية مكتوبة من اليمين إلى اليسار، עברית גם",
    "Combining: e\u0301 a\u0308 \u200b zero-width \ufeff BOM",
    "Math ∑ ∫ √ ∞ ≠ ≤ ≥ → ← ⇒ ∀x∈ℝ",
    "code: def f(x):\n    return x**2  # comment\n",
    "<|endoftext|> is special",
    "",
    " ",
    "\x00\x01\x7f control bytes",
]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpt2_tokenizer")
    gpt2_tokenizer.build(out)
    return out


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def reference_text() -> str:
    """A long, varied, deterministic text: some stdlib sources (prose docstrings and code) plus unicode."""
    import json as json_module
    import textwrap

    parts = [inspect.getsource(textwrap), inspect.getsource(json_module.decoder)]
    return "\n".join(parts + UNICODE_TEXTS * 3)


def test_folder_contents(tokenizer_dir):
    for name in ["vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json"]:
        assert (tokenizer_dir / name).is_file(), name
    vocab = json.loads((tokenizer_dir / "vocab.json").read_text(encoding="utf-8"))
    assert len(vocab) == 50257
    assert vocab["<|endoftext|>"] == 50256
    assert vocab["Ġthe"] == 262
    merges = (tokenizer_dir / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0].startswith("#version")
    assert len(merges) - 1 == 50000
    assert merges[1] == "Ġ t"  # GPT-2's first merge
    config = json.loads((tokenizer_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["model_max_length"] == 1024


def test_loads_with_gpt2_tokenizer_fast(tokenizer_dir):
    from transformers import GPT2TokenizerFast

    tok = GPT2TokenizerFast.from_pretrained(tokenizer_dir)
    assert tok("Hello world")["input_ids"] == [15496, 995]


def test_special_tokens_and_length(tokenizer):
    assert len(tokenizer) == 50257
    assert tokenizer.model_max_length == 1024
    assert tokenizer.bos_token == tokenizer.eos_token == tokenizer.unk_token == "<|endoftext|>"
    assert tokenizer.eos_token_id == 50256
    assert tokenizer.pad_token is None  # as for GPT-2: callers set pad_token = eos_token themselves


@pytest.mark.parametrize(
    "text, ids",
    [
        ("Hello world", [15496, 995]),
        (" Hello world", [18435, 995]),
        (" the", [262]),
        ("<|endoftext|>", [50256]),
        ("Hello<|endoftext|>", [15496, 50256]),
    ],
)
def test_known_ids(tokenizer, text, ids):
    assert tokenizer(text)["input_ids"] == ids


@pytest.mark.parametrize("text", UNICODE_TEXTS)
def test_round_trip(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text


def test_every_single_byte_round_trips(tokenizer):
    text = bytes(range(256)).decode("latin-1")
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text


def test_matches_tiktoken(tokenizer):
    tiktoken = pytest.importorskip("tiktoken")
    ranks = gpt2_tokenizer.load_ranks(gpt2_tokenizer.source_file())
    reference = tiktoken.Encoding(
        name="gpt2_offline",
        pat_str=gpt2_tokenizer.PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )
    text = reference_text()
    expected = reference.encode(text, allowed_special="all")
    assert len(expected) > 5000
    assert tokenizer(text)["input_ids"] == expected
    for sample in UNICODE_TEXTS:
        assert tokenizer(sample)["input_ids"] == reference.encode(sample, allowed_special="all"), sample


def test_missing_package_is_a_user_error(monkeypatch):
    from finetune.core.errors import UserError

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "whisper" else real_find_spec(name, *a)
    )
    with pytest.raises(UserError, match="pip install --no-deps openai-whisper"):
        gpt2_tokenizer.build(Path("/nonexistent/never-written"))
