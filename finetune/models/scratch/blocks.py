"""The building blocks of the Transformer, in the order of the paper (Vaswani et al., 2017, section 3).

    inputs -> TextEmbedding (token embedding * sqrt(d_model) + SinusoidalPositionalEncoding)   section 3.4, 3.5
           -> Encoder: n x EncoderBlock (self-attention, FeedForward)                            section 3.1
    outputs-> TextEmbedding
           -> Decoder: n x DecoderBlock (masked self-attention, cross-attention, FeedForward)    section 3.1

Every sublayer (attention or feed-forward) is wrapped in a residual connection and a LayerNorm. The paper
normalises *after* adding the residual ("post-LN": LayerNorm(x + Sublayer(x))). Most models since GPT-2
normalise the sublayer's *input* instead ("pre-LN": x + Sublayer(LayerNorm(x))), which keeps an untouched
identity path from the embeddings to the output, so gradients reach the first layers intact and training
is stable without a long learning-rate warm-up. That matters here: the from-scratch models are trained with
the same short schedules as the fine-tuned ones. Pre-LN is the default (`norm_first=True`); post-LN is one
flag away, and both are tested against torch.nn.TransformerEncoderLayer / TransformerDecoderLayer, whose
`norm_first` flag means the same thing. A pre-LN stack needs one last LayerNorm on its output (`Encoder`,
`Decoder`), since nothing else normalises the residual stream.

The blocks return their attention weights along with their output, so a model can hand them to the user
(`output_attentions=True`) for plots like docs/figures/attention_*.png.

Shape legend: B batch, T target/query length, S source/key length, C d_model, N image patches.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .attention import MultiHeadAttention


def sinusoidal_positional_encoding(n_positions: int, d_model: int) -> torch.Tensor:
    """The paper's table of position codes (section 3.5), shape (n_positions, d_model):

        PE(pos, 2i)   = sin(pos / 10000^(2i / d_model))
        PE(pos, 2i+1) = cos(pos / 10000^(2i / d_model))

    Each pair of columns is a sine/cosine clock with its own wavelength, from 2*pi (fast, column 0) to
    10000 * 2*pi (slow, last columns): together they give every position a distinct fingerprint, and
    PE(pos + k) is a fixed rotation of PE(pos), so "k tokens to the left" is easy for attention to learn.
    """
    position = torch.arange(n_positions, dtype=torch.float32)[:, None]  # (P, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)  # (ceil(C/2),): the even column indices 2i
    angle = position / 10000 ** (two_i / d_model)  # (P, ceil(C/2))
    table = torch.zeros(n_positions, d_model)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])  # an odd d_model has one sine column more
    return table


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal position codes to a sequence of vectors.

    Attention by itself is blind to order: permute the tokens and each token's output is permuted the same
    way. Adding a position-dependent vector to each token embedding is what tells "dog bites man" from
    "man bites dog". The codes are computed, not learned, so they cost no parameters.
    """

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        # A buffer: moves with .to(device) but is not a parameter; not saved, since it is recomputed.
        self.register_buffer("table", sinusoidal_positional_encoding(max_len, d_model), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C), x + PE[:T]."""
        if x.size(1) > self.table.size(0):
            raise ValueError(
                f"{x.size(1)} positions, but the table holds {self.table.size(0)}: "
                "truncate the input or raise max_position_embeddings"
            )
        return x + self.table[: x.size(1)]


class TextEmbedding(nn.Module):
    """Token ids -> vectors the blocks can work with (sections 3.4 and 3.5).

    The token embedding is multiplied by sqrt(d_model), as in the paper, so that the learned embeddings
    (initialised small) and the position codes (entries in [-1, 1]) start on a comparable scale.
    """

    def __init__(self, vocab_size: int, d_model: int, max_len: int, dropout: float):
        super().__init__()
        self.d_model = d_model
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.positional_encoding = SinusoidalPositionalEncoding(d_model, max_len)
        self.dropout = nn.Dropout(dropout)  # section 5.4: dropout on the sums of embeddings and positions

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """input_ids: (B, T) -> (B, T, C)."""
        tokens = self.token_embedding(input_ids) * math.sqrt(self.d_model)  # (B, T, C)
        return self.dropout(self.positional_encoding(tokens))


class ImageEmbedding(nn.Module):
    """An image -> a sequence of vectors, the Vision Transformer way (Dosovitskiy et al., 2020, Eq. 1).

    The image is cut into non-overlapping patch_size x patch_size squares; each square is flattened and
    projected to d_model. A convolution whose kernel and stride both equal the patch size does exactly
    that, in one call. A learned [CLS] vector is put in front: it belongs to no patch, so after the encoder it
    holds a summary of the whole image, which the classifier reads. Positions are *learned* here (as in
    ViT), unlike the fixed sinusoids of the text models: the patch grid is small and fixed in size.
    """

    def __init__(self, image_size: int, patch_size: int, num_channels: int, d_model: int, dropout: float):
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})")
        n_patches = (image_size // patch_size) ** 2
        self.patch_projection = nn.Conv2d(num_channels, d_model, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.position_embedding = nn.Parameter(torch.zeros(1, n_patches + 1, d_model))
        self.dropout = nn.Dropout(dropout)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values: (B, channels, H, W) -> (B, 1 + N, C); position 0 is [CLS]."""
        patches = self.patch_projection(pixel_values)  # (B, C, H/p, W/p)
        patches = patches.flatten(2).transpose(1, 2)  # (B, N, C), patches in reading order
        cls = self.cls_token.expand(patches.size(0), -1, -1)  # (B, 1, C)
        x = torch.cat([cls, patches], dim=1)  # (B, 1 + N, C)
        return self.dropout(x + self.position_embedding)


class FeedForward(nn.Module):
    """Position-wise feed-forward network (section 3.3, Eq. 2): FFN(x) = max(0, x W1 + b1) W2 + b2.

    Attention mixes information *between* positions; this sublayer then transforms each position on its
    own (the same weights at every position). It widens to d_ff (4 x d_model in the paper), applies a ReLU,
    and narrows back: most of a Transformer's parameters live here.
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.activation = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C) -> (B, T, C)."""
        return self.linear2(self.dropout(self.activation(self.linear1(x))))  # (B, T, d_ff) inside


class EncoderBlock(nn.Module):
    """One encoder layer (section 3.1): self-attention, then feed-forward, each with residual + LayerNorm.

    With a causal mask the same block is a GPT layer: a "decoder-only" model is a stack of these blocks
    where no token may look ahead (there is no encoder to cross-attend to).
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, norm_first: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)  # section 5.4: dropout on each sublayer's output
        self.feed_forward = FeedForward(d_model, d_ff, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, C), mask: bool broadcastable to (B, nh, T, T) -> (B, T, C), weights (B, nh, T, T)."""
        if self.norm_first:  # pre-LN: x + Sublayer(LayerNorm(x))
            attended, weights = self.self_attn(self.norm1(x), mask=mask)
            x = x + self.dropout1(attended)
            x = x + self.dropout2(self.feed_forward(self.norm2(x)))
        else:  # post-LN, the paper's form: LayerNorm(x + Sublayer(x))
            attended, weights = self.self_attn(x, mask=mask)
            x = self.norm1(x + self.dropout1(attended))
            x = self.norm2(x + self.dropout2(self.feed_forward(x)))
        return x, weights


class DecoderBlock(nn.Module):
    """One decoder layer (section 3.1): three sublayers, each with residual + LayerNorm.

    1. masked self-attention over the output generated so far (a causal mask: no peeking at later tokens);
    2. cross-attention: queries from the decoder, keys and values from the encoder output (`memory`),
       the step where the output "reads" the input;
    3. the position-wise feed-forward network.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, norm_first: bool = True):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.feed_forward = FeedForward(d_model, d_ff, dropout)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, T, C) decoder side; memory: (B, S, C) encoder output.

        self_mask: bool, broadcastable to (B, nh, T, T), normally causal & target padding;
        memory_mask: bool, broadcastable to (B, nh, T, S), normally the source padding.
        Returns x (B, T, C), self-attention weights (B, nh, T, T), cross-attention weights (B, nh, T, S).
        """
        if self.norm_first:  # pre-LN: x + Sublayer(LayerNorm(x))
            attended, self_weights = self.self_attn(self.norm1(x), mask=self_mask)
            x = x + self.dropout1(attended)
            attended, cross_weights = self.cross_attn(self.norm2(x), context=memory, mask=memory_mask)
            x = x + self.dropout2(attended)
            x = x + self.dropout3(self.feed_forward(self.norm3(x)))
        else:  # post-LN, the paper's form: LayerNorm(x + Sublayer(x))
            attended, self_weights = self.self_attn(x, mask=self_mask)
            x = self.norm1(x + self.dropout1(attended))
            attended, cross_weights = self.cross_attn(x, context=memory, mask=memory_mask)
            x = self.norm2(x + self.dropout2(attended))
            x = self.norm3(x + self.dropout3(self.feed_forward(x)))
        return x, self_weights, cross_weights


class Encoder(nn.Module):
    """A stack of n EncoderBlocks (the left half of the paper's Fig. 1), plus the final LayerNorm of pre-LN.

    `gradient_checkpointing` is switched on by Hugging Face's `model.gradient_checkpointing_enable()`: each
    block then keeps only its input and recomputes its inside during the backward pass, trading compute
    for memory.
    """

    gradient_checkpointing = False
    # Hugging Face's generate() asks a seq2seq model's `encoder` what its input is called: the model's source
    # is token ids (the embedding in front of this stack turns them into vectors).
    main_input_name = "input_ids"

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float, norm_first: bool):
        super().__init__()
        self.blocks = nn.ModuleList(EncoderBlock(d_model, n_heads, d_ff, dropout, norm_first) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        """x: (B, T, C) -> (B, T, C) and one (B, nh, T, T) attention map per block."""
        attentions = []
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                x, weights = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x, weights = block(x, mask)
            attentions.append(weights)
        return self.final_norm(x), tuple(attentions)


class Decoder(nn.Module):
    """A stack of n DecoderBlocks (the right half of the paper's Fig. 1), plus the final LayerNorm of pre-LN."""

    gradient_checkpointing = False

    def __init__(self, n_layers: int, d_model: int, n_heads: int, d_ff: int, dropout: float, norm_first: bool):
        super().__init__()
        self.blocks = nn.ModuleList(DecoderBlock(d_model, n_heads, d_ff, dropout, norm_first) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """x: (B, T, C), memory: (B, S, C) -> (B, T, C), per-block self- (B, nh, T, T) and cross- (B, nh, T, S) maps."""
        self_attentions, cross_attentions = [], []
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                x, self_weights, cross_weights = checkpoint(
                    block, x, memory, self_mask, memory_mask, use_reentrant=False
                )
            else:
                x, self_weights, cross_weights = block(x, memory, self_mask, memory_mask)
            self_attentions.append(self_weights)
            cross_attentions.append(cross_weights)
        return self.final_norm(x), tuple(self_attentions), tuple(cross_attentions)
