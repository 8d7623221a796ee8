"""A Transformer written from first principles, for teaching. Read it in this order:

    attention.py  scaled dot-product attention, masks, multi-head attention
    blocks.py     positional encoding, embeddings, feed-forward, encoder and decoder blocks and stacks
    models.py     Hugging Face models for classification, language modelling, images, and seq2seq

docs/transformer.md walks from the ideas to these names.

Importing this package registers the models with the Auto classes, so that after `import finetune.models.scratch`,
`AutoModelForSequenceClassification.from_pretrained(saved_dir)` (and the token-classification, masked-LM,
question-answering, causal-LM, image and seq2seq equivalents) rebuild a saved scratch model. `save_pretrained` also
copies the three source files next to the weights (`auto_map` in config.json), so a process that never imported
finetune can load the folder with `trust_remote_code=True`.
"""

from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from .attention import MultiHeadAttention, causal_mask, padding_mask, scaled_dot_product_attention
from .blocks import (
    Decoder,
    DecoderBlock,
    Encoder,
    EncoderBlock,
    FeedForward,
    ImageEmbedding,
    SinusoidalPositionalEncoding,
    TextEmbedding,
    sinusoidal_positional_encoding,
)
from .models import (
    ScratchTransformerConfig,
    ScratchTransformerForCausalLM,
    ScratchTransformerForImageClassification,
    ScratchTransformerForMaskedLM,
    ScratchTransformerForQuestionAnswering,
    ScratchTransformerForSeq2Seq,
    ScratchTransformerForSequenceClassification,
    ScratchTransformerForTokenClassification,
    ScratchTransformerPreTrainedModel,
    scratch_config_for,
)

_AUTO_CLASSES = {
    AutoModelForSequenceClassification: ScratchTransformerForSequenceClassification,
    AutoModelForTokenClassification: ScratchTransformerForTokenClassification,
    AutoModelForCausalLM: ScratchTransformerForCausalLM,
    AutoModelForMaskedLM: ScratchTransformerForMaskedLM,
    AutoModelForImageClassification: ScratchTransformerForImageClassification,
    AutoModelForSeq2SeqLM: ScratchTransformerForSeq2Seq,
    AutoModelForQuestionAnswering: ScratchTransformerForQuestionAnswering,
}

AutoConfig.register(ScratchTransformerConfig.model_type, ScratchTransformerConfig)
ScratchTransformerConfig.register_for_auto_class()
for auto_class, model_class in _AUTO_CLASSES.items():
    auto_class.register(ScratchTransformerConfig, model_class)
    model_class.register_for_auto_class(auto_class.__name__)

__all__ = [
    "scaled_dot_product_attention",
    "padding_mask",
    "causal_mask",
    "MultiHeadAttention",
    "sinusoidal_positional_encoding",
    "SinusoidalPositionalEncoding",
    "TextEmbedding",
    "ImageEmbedding",
    "FeedForward",
    "EncoderBlock",
    "DecoderBlock",
    "Encoder",
    "Decoder",
    "ScratchTransformerConfig",
    "ScratchTransformerPreTrainedModel",
    "ScratchTransformerForSequenceClassification",
    "ScratchTransformerForTokenClassification",
    "ScratchTransformerForQuestionAnswering",
    "ScratchTransformerForCausalLM",
    "ScratchTransformerForMaskedLM",
    "ScratchTransformerForImageClassification",
    "ScratchTransformerForSeq2Seq",
    "scratch_config_for",
]
