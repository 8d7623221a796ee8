"""Words -> sub-tokens: each word's tag on its first piece (-100 or the continuation tag on the rest), truncation
counted; tag schemes read, validated, converted and repaired; the scratch tagger's loss is BERT's."""

import pytest
import torch

from finetune.data import tag_schemes
from finetune.data.tokens import align_labels, continuation_ids, tokenize_and_align

NAMES = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_dir)


def splits_of(tokens, tags):
    from datasets import Dataset, DatasetDict

    return DatasetDict(
        {
            "train": Dataset.from_dict({"tokens": tokens, "tags": tags}),
            "test": Dataset.from_dict({"tokens": tokens, "tags": tags}),
        }
    )


def test_a_word_of_several_sub_tokens_is_labelled_on_its_first_piece_only(tokenizer):
    words, tags = ["Schwarzenegger", "visited", "Ouagadougou"], [1, 0, 3]
    pieces = [tokenizer.tokenize(w) for w in words]
    assert len(pieces[0]) > 1 and len(pieces[2]) > 1  # the point of the test: words that split
    tokenized, notes = tokenize_and_align(splits_of([words], [tags]), tokenizer, 64, NAMES)
    labels = tokenized["train"][0]["labels"]
    expected = [-100]  # [CLS]
    for piece_list, tag in zip(pieces, tags):
        expected += [tag] + [-100] * (len(piece_list) - 1)
    expected += [-100]  # [SEP]
    assert labels == expected and notes == []


def test_label_all_tokens_continues_the_entity_on_later_pieces_and_only_in_train(tokenizer):
    words, tags = ["Schwarzenegger", "visited", "Ouagadougou"], [1, 0, 3]
    n_first, n_last = len(tokenizer.tokenize(words[0])), len(tokenizer.tokenize(words[2]))
    tokenized, _ = tokenize_and_align(splits_of([words], [tags]), tokenizer, 64, NAMES, label_all_tokens=True)
    assert tokenized["train"][0]["labels"] == [-100, 1] + [2] * (n_first - 1) + [0, 3] + [4] * (n_last - 1) + [-100]
    # validation / test stay one label per word, so scores are per word whatever the flag
    assert sum(label != -100 for label in tokenized["test"][0]["labels"]) == 3


def test_align_labels_by_hand():
    word_ids = [None, 0, 0, 0, 1, None]
    assert align_labels(word_ids, [1, 0]) == [-100, 1, -100, -100, 0, -100]
    assert align_labels(word_ids, [1, 0], continuation_ids(NAMES)) == [-100, 1, 2, 2, 0, -100]


def test_truncation_drops_the_last_words_and_is_counted(tokenizer):
    long = ["Paris"] * 30
    tokenized, notes = tokenize_and_align(splits_of([long, ["Paris"]], [[3] * 30, [3]]), tokenizer, 8, NAMES)
    labels = tokenized["train"][0]["labels"]
    assert len(labels) == 8 and sum(label != -100 for label in labels) == 6  # [CLS] + 6 words + [SEP]
    assert any(note.startswith("1 train sentences longer than --max_length 8") for note in notes)


# ---- tag schemes --------------------------------------------------------------------------------------------

IOB2 = ["B-PER", "I-PER", "O", "B-PER", "B-PER", "O", "B-LOC"]
IOB1 = ["I-PER", "I-PER", "O", "I-PER", "B-PER", "O", "I-LOC"]
IOBES = ["B-PER", "E-PER", "O", "S-PER", "S-PER", "O", "S-LOC"]


def test_schemes_are_detected_and_convert_into_each_other():
    for tags, scheme in ((IOB2, "IOB2"), (IOB1, "IOB1"), (IOBES, "IOBES")):
        assert tag_schemes.detect([tags]) == scheme
        assert tag_schemes.invalid_tags([tags], scheme) == {}
        for other, expected in ((IOB2, "IOB2"), (IOB1, "IOB1"), (IOBES, "IOBES")):
            assert tag_schemes.rewrite([tags], expected) == [other]


def test_an_i_tag_opening_an_entity_breaks_iob2_and_is_repaired_to_b():
    broken = [["O", "I-PER", "I-PER", "O", "B-LOC"]]
    assert tag_schemes.detect(broken) == "IOB2"
    assert tag_schemes.invalid_tags(broken, "IOB2") == {"I-PER": 1}
    assert tag_schemes.rewrite(broken, "IOB2") == [["O", "B-PER", "I-PER", "O", "B-LOC"]]


def test_spans_agree_with_seqeval_get_entities():
    from seqeval.metrics.sequence_labeling import get_entities

    for tags in (IOB2, IOB1, IOBES, ["I-PER", "B-LOC", "E-LOC", "I-ORG", "S-ORG", "E-PER"]):
        assert tag_schemes.spans(tags) == get_entities(tags)


# ---- the scratch tagger -------------------------------------------------------------------------------------


def test_scratch_tagger_loss_ignores_minus_100_like_bert_and_padding_does_not_change_logits():
    from finetune.models.scratch import ScratchTransformerConfig, ScratchTransformerForTokenClassification

    torch.manual_seed(0)
    config = ScratchTransformerConfig(
        vocab_size=20, d_model=16, n_heads=2, n_layers=2, d_ff=32, dropout=0.0, num_labels=5, max_position_embeddings=32
    )
    model = ScratchTransformerForTokenClassification(config).eval()
    ids = torch.randint(3, 20, (2, 6))
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    labels = torch.tensor([[-100, 1, 2, -100, 0, -100], [-100, 3, 4, -100, -100, -100]])
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert out.logits.shape == (2, 6, 5)
    keep = labels != -100
    manual = torch.nn.functional.cross_entropy(out.logits[keep], labels[keep])  # mean over labelled positions
    assert torch.allclose(out.loss, manual)
    shorter = model(input_ids=ids[1:, :4], attention_mask=mask[1:, :4]).logits
    assert torch.allclose(out.logits[1, :4], shorter[0], atol=1e-5)
