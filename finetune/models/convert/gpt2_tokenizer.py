"""The exact GPT-2 tokenizer, rebuilt offline from the BPE ranks that ship inside `openai-whisper`.

`whisper/assets/gpt2.tiktoken` lists every GPT-2 token as `base64(token bytes) rank`, one per line (ranks 0..50255).
That is all byte-level BPE needs:

- `vocab.json` maps each token, written with GPT-2's byte-to-unicode alphabet, to its rank (= its id), plus
  `<|endoftext|>` = 50256.
- `merges.txt` holds, for every multi-byte token in rank order, the two parts it is merged from. Those parts
  are what BPE produces on the token's own bytes when only merges ranked below the token are allowed; with
  tiktoken-style ranks the merge priority of a pair is the rank of the token it makes, so the i-th merge line
  makes the token with rank 256 + i and Hugging Face's BPE reproduces tiktoken's encoding exactly.

The folder loads with `GPT2TokenizerFast.from_pretrained(out_dir)` or `AutoTokenizer.from_pretrained(out_dir)`.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from finetune.models.convert import make_readable, require_file

PIP_SPEC = "openai-whisper==20250625"
ASSET = "assets/gpt2.tiktoken"
END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256
MODEL_MAX_LENGTH = 1024
# GPT-2's pre-tokenizer regex (what tiktoken's "gpt2" encoding uses; Hugging Face's ByteLevel pre-tokenizer
# implements the same split). Kept here for tests that compare against tiktoken.
PAT_STR = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def source_file() -> Path:
    """Path of `gpt2.tiktoken` inside the installed openai-whisper package (UserError if it is missing)."""
    return require_file("whisper", PIP_SPEC, ASSET, "the offline GPT-2 tokenizer")


def load_ranks(path: Path) -> dict[bytes, int]:
    """Read a `.tiktoken` file: one `base64(token bytes) rank` pair per non-empty line."""
    ranks: dict[bytes, int] = {}
    for line in path.read_text(encoding="ascii").splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, ...) are mapped, in byte
    order, onto the characters from U+0100 upwards, so no token contains whitespace or control characters.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _split_in_two(token: bytes, rank: int, ranks: dict[bytes, int]) -> tuple[bytes, bytes]:
    """Run BPE on `token`'s bytes using only merges ranked below `rank`; it must stop at exactly two parts."""
    parts = [token[i : i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best_index, best_rank = -1, rank
        for i in range(len(parts) - 1):
            pair_rank = ranks.get(parts[i] + parts[i + 1])
            if pair_rank is not None and pair_rank < best_rank:
                best_index, best_rank = i, pair_rank
        if best_index < 0:
            break
        parts[best_index : best_index + 2] = [parts[best_index] + parts[best_index + 1]]
    if len(parts) != 2:
        raise ValueError(f"token {token!r} (rank {rank}) does not split into two lower-ranked parts: {parts!r}")
    return parts[0], parts[1]


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """GPT-2's `vocab.json` contents (without special tokens) and merge pairs, in rank order."""
    byte_encoder = bytes_to_unicode()

    def encode(token: bytes) -> str:
        return "".join(byte_encoder[b] for b in token)

    vocab: dict[str, int] = {}
    merges: list[tuple[str, str]] = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        vocab[encode(token)] = rank
        if len(token) > 1:
            left, right = _split_in_two(token, rank, ranks)
            merges.append((encode(left), encode(right)))
    return vocab, merges


def build(out_dir: Path) -> None:
    """Write the GPT-2 tokenizer (vocab.json, merges.txt, tokenizer.json, tokenizer config) into `out_dir`."""
    from transformers import GPT2TokenizerFast

    ranks = load_ranks(source_file())
    vocab, merges = vocab_and_merges(ranks)
    vocab[END_OF_TEXT] = END_OF_TEXT_ID
    if len(vocab) != END_OF_TEXT_ID + 1 or sorted(vocab.values()) != list(range(END_OF_TEXT_ID + 1)):
        raise ValueError(f"{source_file()} does not hold GPT-2's 50,256 ranks (got {len(ranks)} tokens)")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_path.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges_path.write_text("#version: 0.2\n" + "".join(f"{left} {right}\n" for left, right in merges), encoding="utf-8")

    # Let transformers write tokenizer.json and tokenizer_config.json in its own current format.
    tokenizer = GPT2TokenizerFast(
        vocab=str(vocab_path),
        merges=str(merges_path),
        unk_token=END_OF_TEXT,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        add_prefix_space=False,
        model_max_length=MODEL_MAX_LENGTH,
    )
    tokenizer.save_pretrained(out_dir)
    (out_dir / "FINETUNE_SOURCE.json").write_text(
        json.dumps(
            {
                "what": "GPT-2 byte-level BPE tokenizer (exact), rebuilt from openai-whisper's gpt2.tiktoken ranks",
                "source_package": PIP_SPEC,
                "source_file": "whisper/" + ASSET,
                "converter": "finetune.models.convert.gpt2_tokenizer",
                "vocab_size": len(vocab),
                "merges": len(merges),
                "pad_token": None,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    make_readable(out_dir)
