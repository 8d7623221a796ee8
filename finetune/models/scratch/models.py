"""Hugging Face compatible models built from the blocks in blocks.py, one per task the toolkit trains.

    ScratchTransformerForSequenceClassification  text  -> encoder -> mean over tokens -> label    (BERT's job)
    ScratchTransformerForTokenClassification     text  -> encoder -> one label per token          (BERT's NER job)
    ScratchTransformerForMaskedLM                text  -> encoder -> the hidden token, per [MASK] (BERT's pretraining)
    ScratchTransformerForQuestionAnswering       question + context -> encoder -> answer span  (BERT's SQuAD job)
    ScratchTransformerForCausalLM                text  -> causal blocks -> next token            (GPT's job)
    ScratchTransformerForImageClassification     image -> patches + [CLS] -> encoder -> label    (ViT's job)
    ScratchTransformerForSeq2Seq                 text  -> encoder -> decoder -> output text      (the 2017 paper)

Being `PreTrainedModel`s, they plug into everything built for the pretrained models: `model(**batch)` with
a tokenizer's batch, `save_pretrained` / `from_pretrained`, the Auto classes (after `import finetune.models.scratch`),
gradient checkpointing, and `generate()` (greedy, beam search) for the causal LM and the seq2seq model. Their
forward methods return the same output classes as BERT/GPT-2/ViT/T5 do.

They start from random weights: the point of comparing them with a fine-tuned checkpoint is to see what
pretraining buys. The masked LM is that pretraining done here (recipes/pretraining.py): its `embeddings` and
`encoder` have the same names and shapes as the classifiers', so they load into a classifier as its start.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import (
    BaseModelOutput,
    CausalLMOutput,
    ImageClassifierOutput,
    MaskedLMOutput,
    QuestionAnsweringModelOutput,
    Seq2SeqLMOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

from .attention import causal_mask, padding_mask
from .blocks import (
    Decoder,
    Encoder,
    ImageEmbedding,
    SinusoidalPositionalEncoding,
    TextEmbedding,
    sinusoidal_positional_encoding,
)


class ScratchTransformerConfig(PretrainedConfig):
    """One configuration for all four models; each reads the fields it needs.

    Sizes: d_model (width of every token vector), n_heads (d_model must divide by it), d_ff (hidden width of
    the feed-forward sublayer, 4 x d_model in the paper), n_layers (blocks of the encoder, and of the
    decoder-only causal LM), n_decoder_layers (decoder blocks of the seq2seq model).
    Text: vocab_size, max_position_embeddings (longest sequence), pad/bos/eos_token_id,
    decoder_start_token_id (first decoder input of the seq2seq model).
    Images: image_size (square side in pixels), patch_size, num_channels.
    Training: dropout (one rate everywhere, as in the paper), norm_first (pre-LN if True, the paper's
    post-LN if False, see blocks.py), initializer_range (std of the normal initialisation).
    num_labels / id2label / label2id come from PretrainedConfig.
    """

    model_type = "scratch_transformer"
    # Standard names, so code written for BERT-like configs (config.hidden_size, ...) also reads this one.
    attribute_map = {
        "hidden_size": "d_model",
        "num_attention_heads": "n_heads",
        "num_hidden_layers": "n_layers",
        "intermediate_size": "d_ff",
    }

    vocab_size: int = 30522
    d_model: int = 256
    n_heads: int = 4
    n_layers: int = 4
    n_decoder_layers: int = 4
    d_ff: int = 1024
    max_position_embeddings: int = 512
    dropout: float = 0.1
    norm_first: bool = True
    image_size: int = 28
    patch_size: int = 7
    num_channels: int = 1
    initializer_range: float = 0.02
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    decoder_start_token_id: int | None = None
    tie_word_embeddings: bool = True


# Small sizes that train in minutes on a laptop CPU, per Hugging Face task name.
_TASK_DEFAULTS = {
    "text-classification": dict(d_model=256, n_heads=4, n_layers=4, d_ff=1024, max_position_embeddings=512),
    "token-classification": dict(d_model=256, n_heads=4, n_layers=4, d_ff=1024, max_position_embeddings=512),
    "question-answering": dict(d_model=256, n_heads=4, n_layers=4, d_ff=1024, max_position_embeddings=512),
    "text-generation": dict(d_model=256, n_heads=4, n_layers=4, d_ff=1024, max_position_embeddings=256),
    "image-classification": dict(d_model=128, n_heads=4, n_layers=4, d_ff=512, image_size=28, patch_size=7),
    "text2text-generation": dict(d_model=128, n_heads=4, n_layers=3, n_decoder_layers=3, d_ff=512),
}


def scratch_config_for(task: str, **overrides) -> ScratchTransformerConfig:
    """A ScratchTransformerConfig with small defaults for `task` (one of _TASK_DEFAULTS), then `overrides`.

    Example: scratch_config_for("text-classification", vocab_size=len(tokenizer), num_labels=2,
    pad_token_id=tokenizer.pad_token_id).
    """
    if task not in _TASK_DEFAULTS:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(_TASK_DEFAULTS)}")
    return ScratchTransformerConfig(**{**_TASK_DEFAULTS[task], **overrides})


class ScratchTransformerPreTrainedModel(PreTrainedModel):
    """What the four models share: the config class, weight initialisation, Hugging Face capabilities."""

    config_class = ScratchTransformerConfig
    supports_gradient_checkpointing = True  # see Encoder.gradient_checkpointing
    _input_embed_layer = "token_embedding"  # lets get_input_embeddings() find embeddings.token_embedding

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """GPT-2/BERT's recipe: weights ~ Normal(0, 0.02), biases 0, LayerNorm the identity.

        The parent class does that for Linear, Conv2d, Embedding and LayerNorm. What it cannot know: the ViT's
        two raw parameters, the masked-LM head's output bias, and the sinusoid table, a buffer that is not saved
        and that from_pretrained allocates uninitialised, so it must be recomputed here. The `init.*` functions
        leave tensors that were loaded from a checkpoint alone.
        """
        super()._init_weights(module)
        if isinstance(module, SinusoidalPositionalEncoding):
            init.copy_(module.table, sinusoidal_positional_encoding(*module.table.shape))
        elif isinstance(module, ImageEmbedding):
            init.zeros_(module.cls_token)  # as in ViT: the [CLS] vector starts empty and learns what to hold
            init.normal_(module.position_embedding, std=self.config.initializer_range)
        elif isinstance(module, MaskedLMHead):
            init.zeros_(module.bias)  # the per-token output bias starts at 0, as BERT's


def build_text_embedding(config: ScratchTransformerConfig) -> TextEmbedding:
    return TextEmbedding(config.vocab_size, config.d_model, config.max_position_embeddings, config.dropout)


def build_encoder(config: ScratchTransformerConfig) -> Encoder:
    return Encoder(config.n_layers, config.d_model, config.n_heads, config.d_ff, config.dropout, config.norm_first)


def mean_over_tokens(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """hidden: (B, T, C), attention_mask: (B, T) of 1/0 -> (B, C), the average of the non-padding vectors."""
    weights = attention_mask[:, :, None].to(hidden.dtype)  # (B, T, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str | None) -> torch.Tensor:
    """The loss Hugging Face's *ForSequenceClassification models use for each problem type.

    single_label_classification: cross-entropy over the K classes (the default when problem_type is unset).
    multi_label_classification: one independent yes/no per label, binary cross-entropy on each logit.
    regression: mean squared error between the one output and the score.
    """
    if problem_type == "regression":
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    if problem_type == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())
    return F.cross_entropy(logits, labels)


class ScratchTransformerForSequenceClassification(ScratchTransformerPreTrainedModel):
    """Encoder-only text classifier: TextEmbedding -> Encoder -> mean pooling -> linear classifier.

    Pooling: the mean of the final vectors of the real (non-padding) tokens. BERT instead reads the vector of
    its first token, [CLS], but BERT's pretraining taught [CLS] to summarise the sentence. A model trained
    from scratch on a small labelled set has no such summary token yet; the mean lets every token's vector
    feed the decision (each one gets a gradient from the start), and it ignores padding exactly, so extra
    pad tokens cannot change the logits.
    """

    def __init__(self, config: ScratchTransformerConfig):
        super().__init__(config)
        self.embeddings = build_text_embedding(config)
        self.encoder = build_encoder(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self.post_init()  # initialise the weights (_init_weights) the Hugging Face way

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        return_dict: bool = True,
        **kwargs,  # token_type_ids and other tokenizer outputs this model has no use for
    ) -> SequenceClassifierOutput | tuple:
        """input_ids, attention_mask: (B, T); labels: (B,) class ids, (B, K) 0/1 floats (multi-label) or (B,) scores
        (regression, num_labels 1). logits: (B, num_labels)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids)  # (B, T, C)
        x, attentions = self.encoder(x, mask=padding_mask(attention_mask))  # (B, T, C)
        pooled = mean_over_tokens(x, attention_mask)  # (B, C)
        logits = self.classifier(self.dropout(pooled))  # (B, num_labels)
        loss = sequence_classification_loss(logits, labels, self.config.problem_type) if labels is not None else None
        output = SequenceClassifierOutput(
            loss=loss, logits=logits, attentions=attentions if output_attentions else None
        )
        return output if return_dict else output.to_tuple()


class ScratchTransformerForTokenClassification(ScratchTransformerPreTrainedModel):
    """Encoder-only tagger: TextEmbedding -> Encoder -> the same linear classifier on every token's vector.

    No pooling: each position keeps its own final vector, which by then has attended to the whole sentence, and
    gets its own label (B-PER, O, ...). Positions labelled -100 (padding, special tokens, a word's later
    sub-tokens) add nothing to the loss, exactly as in BertForTokenClassification.
    """

    def __init__(self, config: ScratchTransformerConfig):
        super().__init__(config)
        self.embeddings = build_text_embedding(config)
        self.encoder = build_encoder(config)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        return_dict: bool = True,
        **kwargs,  # token_type_ids and other tokenizer outputs this model has no use for
    ) -> TokenClassifierOutput | tuple:
        """input_ids, attention_mask: (B, T); labels: (B, T) tag ids or -100. logits: (B, T, num_labels)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids)  # (B, T, C)
        x, attentions = self.encoder(x, mask=padding_mask(attention_mask))  # (B, T, C)
        logits = self.classifier(self.dropout(x))  # (B, T, num_labels)
        loss = None
        if labels is not None:  # cross_entropy wants the classes in dimension 1: (B, num_labels, T) against (B, T)
            loss = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100)
        output = TokenClassifierOutput(loss=loss, logits=logits, attentions=attentions if output_attentions else None)
        return output if return_dict else output.to_tuple()


class MaskedLMHead(nn.Module):
    """BERT's prediction head: a transform, then scores over the vocabulary through the embedding matrix.

        h' = LayerNorm(GELU(h W_t + b_t))                (B, T, C)   the transform, as in BERT
        logits = h' E^T + b                              (B, T, V)   E: the token embedding (V, C), tied

    The output projection *is* the input embedding (transposed): a token is predicted by how well the final
    vector matches its embedding, so the rows of E get trained from both ends. Only the transform and the
    per-token bias b are parameters of their own.
    """

    def __init__(self, d_model: int, vocab_size: int):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.decoder = nn.Linear(d_model, vocab_size, bias=False)  # weight tied to the token embedding
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (B, T, C) -> logits (B, T, V)."""
        h = self.norm(F.gelu(self.dense(hidden)))  # (B, T, C)
        return self.decoder(h) + self.bias  # (B, T, V)


class ScratchTransformerForMaskedLM(ScratchTransformerPreTrainedModel):
    """BERT's pretraining task on the teaching encoder: TextEmbedding -> Encoder -> MaskedLMHead.

    The input has about 15% of its tokens hidden (mostly replaced by [MASK]: see recipes/pretraining.py); the
    labels hold the original ids at those positions and -100 elsewhere. The loss is the cross-entropy of the
    hidden tokens only:

        L = - (1 / |M|) sum_{i in M} log p(x_i | the corrupted sentence)        M: the selected positions

    Because the encoder sees the whole sentence in both directions, predicting a hidden word forces it to
    build vectors that carry meaning from context: what a classifier fine-tuned on top then starts from.
    `embeddings` and `encoder` are named exactly as in the sequence and token classifiers, so their weights
    load into those models unchanged (the head is dropped; finetune/models/scratch_init.py does it).
    """

    _tied_weights_keys = {"mlm_head.decoder.weight": "embeddings.token_embedding.weight"}

    def __init__(self, config: ScratchTransformerConfig):
        super().__init__(config)
        self.embeddings = build_text_embedding(config)
        self.encoder = build_encoder(config)
        self.mlm_head = MaskedLMHead(config.d_model, config.vocab_size)
        self.post_init()  # also ties mlm_head.decoder.weight to the token embedding (config.tie_word_embeddings)

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_head.decoder

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        return_dict: bool = True,
        **kwargs,  # token_type_ids and other tokenizer outputs this model has no use for
    ) -> MaskedLMOutput | tuple:
        """input_ids, attention_mask: (B, T); labels: (B, T), the original id where a token was selected, else
        -100.

        Without labels (fill-mask): logits (B, T, vocab_size), at every position the scores of what token stood
        there. With labels (training, evaluation): logits (N, vocab_size) at the N selected positions only, in
        row-major order, `labels[labels != -100]` being their targets. The vocabulary projection is most of the
        model's arithmetic (V = 30,522 against C = 256), and only about 15% of positions are ever scored, so
        this is about 2.5x faster per step (ModernBERT's "sparse prediction" does the same).
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        x = self.embeddings(input_ids)  # (B, T, C)
        x, attentions = self.encoder(x, mask=padding_mask(attention_mask))  # (B, T, C)
        loss = None
        if labels is None:
            logits = self.mlm_head(x)  # (B, T, V)
        else:  # only the selected positions count (-100 elsewhere), as in BertForMaskedLM
            selected = labels != -100  # (B, T)
            logits = self.mlm_head(x[selected])  # (N, V)
            # (a batch with nothing selected contributes a zero loss, not the NaN of an empty mean)
            loss = F.cross_entropy(logits, labels[selected]) if logits.size(0) else logits.sum() * 0.0
        output = MaskedLMOutput(loss=loss, logits=logits, attentions=attentions if output_attentions else None)
        return output if return_dict else output.to_tuple()


class ScratchTransformerForQuestionAnswering(ScratchTransformerPreTrainedModel):
    """Extractive question answering, BERT's SQuAD head (Devlin et al., 2019, section 4.2) on the scratch encoder.

    The input is one window `[CLS] question [SEP] context [SEP]`. Segment embeddings (0 for the question part, 1 for
    the context, the tokenizer's token_type_ids) are added to the token vectors, as in BERT, so that every position
    knows which side of the pair it is on. Then two vectors, a start vector S and an end vector E (the two rows of
    one Linear(d_model, 2)), score every token h_i of the final layer:

        start_logit_i = S . h_i        end_logit_j = E . h_j        a span (i, j) scores start_logit_i + end_logit_j

    Training: a softmax over the window's positions for the start, another for the end, and the mean of the two
    cross-entropies against the answer's first and last token (or the [CLS] position 0 when the window does not
    hold the answer). Finding the best valid span (j >= i, inside the context, not too long) happens after the
    model, in the postprocessing (finetune.core.qa_spans).
    """

    def __init__(self, config: ScratchTransformerConfig):
        super().__init__(config)
        self.embeddings = build_text_embedding(config)
        self.segment_embedding = nn.Embedding(2, config.d_model)  # question (0) or context (1)
        self.encoder = build_encoder(config)
        self.qa_outputs = nn.Linear(config.d_model, 2)  # S and E: a start and an end score per token
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        output_attentions: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> QuestionAnsweringModelOutput | tuple:
        """input_ids, attention_mask, token_type_ids: (B, T); start_positions, end_positions: (B,) token indices.
        start_logits, end_logits: (B, T)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids) + self.segment_embedding(token_type_ids)  # (B, T, C)
        x, attentions = self.encoder(x, mask=padding_mask(attention_mask))  # (B, T, C)
        start_logits, end_logits = self.qa_outputs(x).unbind(dim=-1)  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            # A position outside the window (>= T) is ignored, as in BertForQuestionAnswering.
            T = start_logits.size(1)
            start_loss = F.cross_entropy(start_logits, start_positions.clamp(0, T), ignore_index=T)
            end_loss = F.cross_entropy(end_logits, end_positions.clamp(0, T), ignore_index=T)
            loss = (start_loss + end_loss) / 2
        output = QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits.contiguous(),
            end_logits=end_logits.contiguous(),
            attentions=attentions if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()


class ScratchTransformerForCausalLM(ScratchTransformerPreTrainedModel, GenerationMixin):
    """Decoder-only language model, GPT style: TextEmbedding -> causal blocks -> logits over the vocabulary.

    There is no encoder to read from, so the decoder block loses its cross-attention and becomes an
    EncoderBlock run under a causal mask. The output layer shares its weight matrix with the token
    embedding ("tied" embeddings, paper section 3.4): a token's input vector and its output score vector
    are the same, which saves vocab_size x d_model parameters and often helps on small data.
    """

    _tied_weights_keys = {"lm_head.weight": "embeddings.token_embedding.weight"}

    def __init__(self, config: ScratchTransformerConfig):
        super().__init__(config)
        self.embeddings = build_text_embedding(config)
        self.transformer = build_encoder(config)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()  # also ties lm_head.weight to the token embedding (config.tie_word_embeddings)
        # Hugging Face's generate() works too (GenerationMixin), told that this model keeps no key/value cache:
        # it must feed the whole sequence at every step, as generate_simple does.
        self.generation_config.use_cache = False

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> CausalLMOutput | tuple:
        """input_ids, attention_mask, labels: (B, T). logits: (B, T, vocab_size), position t scores token t+1.

        labels are the input ids themselves (-100 where no loss is wanted, e.g. padding); the shift by one
        happens here, as in every Hugging Face causal LM.
        """
        T = input_ids.size(1)
        mask = causal_mask(T, input_ids.device)  # (T, T)
        if attention_mask is not None:
            mask = mask & padding_mask(attention_mask)  # (B, 1, T, T)
        x = self.embeddings(input_ids)  # (B, T, C)
        x, attentions = self.transformer(x, mask=mask)  # (B, T, C)
        logits = self.lm_head(x)  # (B, T, V)
        loss = None
        if labels is not None:
            # The prediction at position t is scored against the token at t+1: drop the last prediction
            # (nothing follows it) and the first label (nothing predicts it).
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        output = CausalLMOutput(loss=loss, logits=logits, attentions=attentions if output_attentions else None)
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def generate_simple(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend input_ids (B, T) by max_new_tokens tokens -> (B, T + max_new_tokens). Call model.eval() first.

        The plainest autoregressive loop: run the model on everything so far, take the scores for the next
        token, pick one (the most likely, or a sample), append, repeat. No key/value cache, so each step
        recomputes the whole context, cropped to the last max_position_embeddings tokens.
        """
        for _ in range(max_new_tokens):
            context = input_ids[:, -self.config.max_position_embeddings :]  # (B, <= max_len)
            logits = self(context).logits[:, -1, :]  # (B, V), the scores for the next token
            if do_sample:
                logits = logits / temperature  # < 1 sharpens the distribution, > 1 flattens it
                if top_k is not None:
                    kth_best = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]  # (B, 1)
                    logits = logits.masked_fill(logits < kth_best, float("-inf"))
                next_token = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)  # (B, 1)
            else:
                next_token = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            input_ids = torch.cat([input_ids, next_token], dim=1)
        return input_ids


class ScratchTransformerForImageClassification(ScratchTransformerPreTrainedModel):
    """Vision Transformer (ViT) classifier: ImageEmbedding (patches + [CLS] + positions) -> Encoder -> head on [CLS].

    Apart from the embedding, this is the text classifier's encoder unchanged: to a Transformer an image is
    just a sequence of patch vectors. Every image has the same number of patches, so there is no padding mask.
    """

    main_input_name = "pixel_values"
    _input_embed_layer = "patch_projection"

    def __init__(self, config: ScratchTransformerConfig):
        super().__init__(config)
        self.embeddings = ImageEmbedding(
            config.image_size, config.patch_size, config.num_channels, config.d_model, config.dropout
        )
        self.encoder = build_encoder(config)
        self.classifier = nn.Linear(config.d_model, config.num_labels)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> ImageClassifierOutput | tuple:
        """pixel_values: (B, num_channels, image_size, image_size); labels: (B,). logits: (B, num_labels)."""
        x = self.embeddings(pixel_values)  # (B, 1 + N, C)
        x, attentions = self.encoder(x)  # (B, 1 + N, C)
        logits = self.classifier(x[:, 0])  # (B, num_labels), read from the [CLS] position
        loss = F.cross_entropy(logits, labels) if labels is not None else None
        output = ImageClassifierOutput(loss=loss, logits=logits, attentions=attentions if output_attentions else None)
        return output if return_dict else output.to_tuple()


class ScratchTransformerForSeq2Seq(ScratchTransformerPreTrainedModel, GenerationMixin):
    """The full encoder-decoder of "Attention Is All You Need" (Fig. 1), e.g. for translation.

    The encoder reads the whole source at once (no causal mask). The decoder produces the target one token
    at a time: it sees the target so far (causal mask) and the encoder's output (cross-attention).
    Source and target share one embedding matrix, which is also the output layer (section 3.4): here they
    share a vocabulary.

    Training uses "teacher forcing": the decoder input is the correct target shifted right by one, starting
    with decoder_start_token_id, so every position learns to predict its own label in one parallel pass.

    It is a Hugging Face seq2seq model like T5 or BART: `model(input_ids, attention_mask, labels=...)` returns the
    loss (labels -100 are ignored), `generate()` does greedy or beam search (encoding once, through get_encoder),
    and `output_attentions=True` returns the cross-attention maps (B, nh, T, S), one per decoder block: which
    source token each output token read.
    """

    _tied_weights_keys = {"lm_head.weight": "embeddings.token_embedding.weight"}

    def __init__(self, config: ScratchTransformerConfig):
        config.is_encoder_decoder = True  # generate() encodes the source once, then decodes (as for T5 / BART)
        super().__init__(config)
        self.embeddings = build_text_embedding(config)
        self.encoder = build_encoder(config)
        self.decoder = Decoder(
            config.n_decoder_layers, config.d_model, config.n_heads, config.d_ff, config.dropout, config.norm_first
        )
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()
        # No key/value cache: generate() feeds the whole output so far at every step, as greedy_decode does.
        self.generation_config.use_cache = False

    def get_encoder(self, modality=None):
        """What generate() calls once per batch to read the source: embeddings + encoder, as one callable."""
        return SourceEncoder(self)

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, ...]]:
        """Source (B, S) -> memory (B, S, C), the mask that hides source padding (B, 1, 1, S), attention maps."""
        source_mask = padding_mask(attention_mask) if attention_mask is not None else None
        memory, attentions = self.encoder(self.embeddings(input_ids), mask=source_mask)
        return memory, source_mask, attentions

    def decode(
        self,
        decoder_input_ids: torch.Tensor,
        memory: torch.Tensor,
        source_mask: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Target so far (B, T) and memory (B, S, C) -> logits (B, T, V), self- and cross-attention maps.

        logits_to_keep k > 0: scores for the last k positions only (B, k, V). Generating needs only the last
        position's, and the output layer (C x V, V ~ 30,000) is the largest matrix product of a step."""
        target_mask = causal_mask(decoder_input_ids.size(1), decoder_input_ids.device)  # (T, T)
        x = self.embeddings(decoder_input_ids)  # (B, T, C)
        x, self_attentions, cross_attentions = self.decoder(x, memory, target_mask, source_mask)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]  # (B, k, C)
        return self.lm_head(x), self_attentions, cross_attentions

    def start_tokens(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """(B, 1) of decoder_start_token_id: the first decoder input of every sequence."""
        if self.config.decoder_start_token_id is None:
            raise ValueError("set config.decoder_start_token_id to train or decode a ScratchTransformerForSeq2Seq")
        return torch.full((batch_size, 1), self.config.decoder_start_token_id, dtype=torch.long, device=device)

    def shift_right(self, labels: torch.Tensor) -> torch.Tensor:
        """labels (B, T) -> decoder inputs (B, T): [start, y_1, ..., y_{T-1}], with -100 replaced by padding."""
        shifted = torch.cat([self.start_tokens(labels.size(0), labels.device), labels[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == -100, self.config.pad_token_id)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        encoder_outputs: BaseModelOutput | tuple | None = None,
        output_attentions: bool = False,
        return_dict: bool = True,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> Seq2SeqLMOutput | tuple:
        """input_ids, attention_mask: (B, S) source; labels: (B, T) target (-100 = ignore);
        decoder_input_ids: (B, T), by default labels shifted right; encoder_outputs: the source already encoded
        (generate() passes it at every step, with logits_to_keep 1). logits: (B, T, vocab_size)."""
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("pass labels or decoder_input_ids")
            decoder_input_ids = self.shift_right(labels)
        if encoder_outputs is None:
            memory, source_mask, encoder_attentions = self.encode(input_ids, attention_mask)
        else:  # (B, S, C), encoded once by generate(); the source mask is rebuilt from the attention mask
            memory, encoder_attentions = encoder_outputs[0], None
            source_mask = padding_mask(attention_mask) if attention_mask is not None else None
        logits, self_attentions, cross_attentions = self.decode(
            decoder_input_ids, memory, source_mask, 0 if labels is not None else logits_to_keep
        )
        loss = None
        if labels is not None:  # no shift here: decoder_input_ids are already one step behind the labels
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)
        output = Seq2SeqLMOutput(
            loss=loss,
            logits=logits,
            encoder_last_hidden_state=memory,
            decoder_attentions=self_attentions if output_attentions else None,
            cross_attentions=cross_attentions if output_attentions else None,
            encoder_attentions=encoder_attentions if output_attentions else None,
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def greedy_decode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, max_new_tokens: int = 32
    ) -> torch.Tensor:
        """Source (B, S) -> output ids (B, 1 + n), starting with decoder_start_token_id. Call model.eval() first.

        Encode once; then repeatedly decode the output so far and append the most likely next token. A
        sequence that has produced eos_token_id (if set) is padded from then on; the loop stops when all have.
        """
        memory, source_mask, _ = self.encode(input_ids, attention_mask)
        output = self.start_tokens(input_ids.size(0), input_ids.device)  # (B, 1)
        finished = torch.zeros(input_ids.size(0), dtype=torch.bool, device=input_ids.device)  # (B,)
        for _ in range(max_new_tokens):
            logits, _, _ = self.decode(output, memory, source_mask)  # (B, t, V)
            next_token = logits[:, -1].argmax(dim=-1)  # (B,)
            if self.config.eos_token_id is not None:
                next_token = next_token.masked_fill(finished, self.config.pad_token_id)
                finished |= next_token == self.config.eos_token_id
            output = torch.cat([output, next_token[:, None]], dim=1)
            if finished.all():
                break
        return output


class SourceEncoder:
    """The encoder half of a ScratchTransformerForSeq2Seq as Hugging Face's generate() wants it: input_ids and
    attention_mask (B, S) -> BaseModelOutput(last_hidden_state=memory (B, S, C)). A view of the model's own
    modules, not a module itself: it adds no weights and no state-dict keys."""

    def __init__(self, model: ScratchTransformerForSeq2Seq):
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> BaseModelOutput:
        memory, _, attentions = self.model.encode(input_ids, attention_mask)  # (B, S, C)
        return BaseModelOutput(last_hidden_state=memory, attentions=attentions if output_attentions else None)

    __call__ = forward
