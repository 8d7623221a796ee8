"""The from-scratch Hugging Face models: masks do what they promise, models survive save/load through the
Auto classes, and the encoder-decoder actually learns (reversing digit strings)."""

import json

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from transformers.dynamic_module_utils import get_class_from_dynamic_module

from finetune.models.scratch import (
    ScratchTransformerConfig,
    ScratchTransformerForCausalLM,
    ScratchTransformerForImageClassification,
    ScratchTransformerForSeq2Seq,
    ScratchTransformerForSequenceClassification,
    ScratchTransformerForTokenClassification,
    scratch_config_for,
)

VOCAB, PAD, START, EOS = 20, 0, 1, 2


def tiny_config(**overrides) -> ScratchTransformerConfig:
    sizes = dict(
        vocab_size=VOCAB, d_model=16, n_heads=2, n_layers=2, n_decoder_layers=2, d_ff=32,
        max_position_embeddings=32, dropout=0.0, num_labels=3, image_size=8, patch_size=4,
        pad_token_id=PAD, decoder_start_token_id=START, eos_token_id=EOS,
    )  # fmt: skip
    return ScratchTransformerConfig(**{**sizes, **overrides})


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def tokens(B, T):
    return torch.randint(3, VOCAB, (B, T))


# --- masks at model level ---------------------------------------------------------------------------------


def test_causal_lm_never_looks_ahead():
    model = ScratchTransformerForCausalLM(tiny_config()).eval()
    ids = tokens(2, 8)
    changed = ids.clone()
    changed[:, 5] = (ids[:, 5] + 1 - 3) % (VOCAB - 3) + 3  # a different token at position 5
    before, after = model(ids).logits, model(changed).logits
    assert torch.equal(before[:, :5], after[:, :5])  # earlier positions: bit-for-bit unchanged
    assert not torch.allclose(before[:, 5:], after[:, 5:])


def test_seq2seq_decoder_never_looks_ahead():
    model = ScratchTransformerForSeq2Seq(tiny_config()).eval()
    source, target = tokens(2, 6), tokens(2, 7)
    changed = target.clone()
    changed[:, 4] = (target[:, 4] + 1 - 3) % (VOCAB - 3) + 3
    before = model(input_ids=source, decoder_input_ids=target).logits
    after = model(input_ids=source, decoder_input_ids=changed).logits
    assert torch.equal(before[:, :4], after[:, :4])
    assert not torch.allclose(before[:, 4:], after[:, 4:])


def test_classifier_ignores_padding():
    model = ScratchTransformerForSequenceClassification(tiny_config()).eval()
    ids = tokens(2, 6)
    padded = torch.cat([ids, torch.full((2, 4), PAD)], dim=1)
    mask = torch.cat([torch.ones(2, 6), torch.zeros(2, 4)], dim=1).long()
    short = model(ids, attention_mask=torch.ones_like(ids)).logits
    long = model(padded, attention_mask=mask).logits
    assert (short - long).abs().max() <= 1e-5


def test_classifier_takes_a_tokenizer_batch_and_returns_loss_and_attentions():
    model = ScratchTransformerForSequenceClassification(tiny_config())
    ids = tokens(2, 6)
    out = model(
        input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids),
        labels=torch.tensor([0, 2]), output_attentions=True,
    )  # fmt: skip
    assert out.logits.shape == (2, 3) and out.loss.ndim == 0
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 2, 6, 6)
    out.loss.backward()


def test_causal_lm_loss_shifts_labels_and_ignores_minus_100():
    model = ScratchTransformerForCausalLM(tiny_config()).eval()
    ids = tokens(2, 6)
    labels = ids.clone()
    labels[:, 4:] = -100
    out = model(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :3].reshape(-1, VOCAB), ids[:, 1:4].reshape(-1))
    assert torch.allclose(out.loss, expected)
    assert model.lm_head.weight is model.embeddings.token_embedding.weight  # tied


def test_generate_simple_greedy_and_seeded_sampling(tmp_path):
    model = ScratchTransformerForCausalLM(tiny_config(eos_token_id=None)).eval()
    prompt = tokens(2, 3)
    greedy = model.generate_simple(prompt, max_new_tokens=5)
    assert greedy.shape == (2, 8) and torch.equal(greedy[:, :3], prompt)
    # Hugging Face's generate() agrees, also after a save/load (generation_config.json keeps use_cache=False).
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert torch.equal(greedy, reloaded.generate(prompt, max_new_tokens=5, do_sample=False))
    sample = lambda: model.generate_simple(  # noqa: E731
        prompt, 5, do_sample=True, temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(1)
    )
    assert torch.equal(sample(), sample())


def test_gradient_checkpointing_gives_the_same_gradients():
    model = ScratchTransformerForSequenceClassification(tiny_config())
    ids, labels = tokens(2, 6), torch.tensor([0, 1])

    def gradients():
        model.zero_grad()
        model(ids, labels=labels).loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    plain = gradients()
    model.activation_checkpointing_enable()
    assert model.encoder.gradient_checkpointing
    for a, b in zip(plain, gradients()):
        assert torch.allclose(a, b, atol=1e-6)


def test_scratch_config_for_applies_defaults_then_overrides():
    config = scratch_config_for("text-classification", vocab_size=100, num_labels=2, n_layers=2)
    assert (config.d_model, config.n_layers, config.vocab_size, config.num_labels) == (256, 2, 100, 2)
    assert config.hidden_size == config.d_model  # the standard name maps onto ours
    with pytest.raises(ValueError):
        scratch_config_for("summarisation")


# --- save_pretrained / from_pretrained -----------------------------------------------------------------------

ROUND_TRIPS = {
    "classification": (
        ScratchTransformerForSequenceClassification, AutoModelForSequenceClassification,
        lambda: dict(input_ids=tokens(2, 6), attention_mask=torch.tensor([[1] * 6, [1] * 4 + [0] * 2])),
    ),
    "token-classification": (
        ScratchTransformerForTokenClassification, AutoModelForTokenClassification,
        lambda: dict(input_ids=tokens(2, 6), attention_mask=torch.tensor([[1] * 6, [1] * 4 + [0] * 2])),
    ),
    "causal-lm": (ScratchTransformerForCausalLM, AutoModelForCausalLM, lambda: dict(input_ids=tokens(2, 6))),
    "image": (
        ScratchTransformerForImageClassification, AutoModelForImageClassification,
        lambda: dict(pixel_values=torch.randn(2, 1, 8, 8)),
    ),
    "seq2seq": (
        ScratchTransformerForSeq2Seq, AutoModelForSeq2SeqLM,
        lambda: dict(input_ids=tokens(2, 6), decoder_input_ids=tokens(2, 4)),
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", ROUND_TRIPS)
def test_save_and_reload_through_auto_class_gives_identical_logits(name, tmp_path):
    model_class, auto_class, make_inputs = ROUND_TRIPS[name]
    model = model_class(tiny_config()).eval()
    inputs = make_inputs()
    model.save_pretrained(tmp_path)
    reloaded = auto_class.from_pretrained(tmp_path).eval()
    assert type(reloaded) is model_class
    assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)


def test_saved_folder_loads_as_remote_code(tmp_path):
    """save_pretrained copies attention.py, blocks.py and models.py and writes auto_map, so a process that never
    imported finetune can load the folder with trust_remote_code=True. This process has the classes registered
    (which take precedence), so load the class from the copies the way trust_remote_code does."""
    model = ScratchTransformerForSequenceClassification(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    assert {"attention.py", "blocks.py", "models.py"} <= {p.name for p in tmp_path.iterdir()}
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    remote_class = get_class_from_dynamic_module(auto_map["AutoModelForSequenceClassification"], str(tmp_path))
    assert remote_class.__module__.startswith("transformers_modules")
    remote = remote_class.from_pretrained(tmp_path).eval()
    ids = tokens(2, 6)
    assert torch.equal(model(ids).logits, remote(ids).logits)


# --- the encoder-decoder learns ----------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    """Tiny matrices train faster on one thread than on two shared ones."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_seq2seq_learns_to_reverse_digit_strings(one_thread):
    length, first_digit = 5, 3  # tokens: 0 pad, 1 start, 2 end, 3..12 the digits 0..9

    def reverse_task(n, generator):
        source = torch.randint(0, 10, (n, length), generator=generator) + first_digit
        target = torch.cat([source.flip(1), torch.full((n, 1), EOS)], dim=1)
        return source, target

    held_out_source, held_out_target = reverse_task(200, torch.Generator().manual_seed(123))
    held_out = {tuple(row) for row in held_out_source.tolist()}

    config = tiny_config(vocab_size=13, d_model=64, n_heads=4, d_ff=128, max_position_embeddings=16)
    model = ScratchTransformerForSeq2Seq(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        source, target = reverse_task(64, generator)
        unseen = torch.tensor([tuple(row) not in held_out for row in source.tolist()])  # keep held-out unseen
        loss = model(input_ids=source[unseen], labels=target[unseen]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    model.eval()
    predicted = model.greedy_decode(held_out_source, max_new_tokens=length + 1)
    assert torch.equal(predicted[:, 0], torch.full((200,), START))
    exact_match = (predicted[:, 1:] == held_out_target).all(dim=1).float().mean().item()
    assert exact_match == 1.0
