"""Which names hold a secret: the one vocabulary the command line, the push, the card and the trackers share.

    is_secret_name("db_password") -> True      is_secret_name("tokens_column") -> False

A name is split into words (snake_case, kebab-case, camelCase, dotted): it names a secret when a word, or two
neighbouring words run together ("api" "key"), is one of SECRET_WORDS, except a special token of a tokenizer
(pad_token, eos_token_id), which is vocabulary, not a credential. Whole words only: tokens_column, max_new_tokens
and tokenizer are not secrets.
"""

from __future__ import annotations

import re

SECRET_WORDS = frozenset({"token", "secret", "password", "passwd", "apikey"})
# Tokenizer settings named like secrets: pad_token, eos_token_id... are vocabulary, not credentials.
SPECIAL_TOKENS = frozenset({"pad", "bos", "eos", "sep", "cls", "unk", "mask"})
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def is_secret_name(name: str) -> bool:
    """A field, flag or key that holds a secret: hub_token, HF_TOKEN, hubToken, wandb.api_key, api-key,
    --db_password... but not tokens_column, max_new_tokens, tokenizer or pad_token."""
    words = [w.lower() for w in _WORD.findall(name)]
    joined = words + [a + b for a, b in zip(words, words[1:])]  # "api" "key" -> "apikey"
    if not SECRET_WORDS & set(joined):
        return False
    return not any(w == "token" and i and words[i - 1] in SPECIAL_TOKENS for i, w in enumerate(words))


def value_pattern() -> str:
    """A regex alternation of the secret words as they are written before a value (token=..., api_key: ...)."""
    return "|".join("api[_-]?key" if word == "apikey" else word for word in sorted(SECRET_WORDS))
