"""Text tokenisation for the CLIP text encoder without torch: a `tokenizers` file plus cleaning.

The bundle's `tokenizer.json` holds the vocabulary, normaliser, pre-tokeniser and special
tokens; the manifest's `TokenizerSpec` the context length, padding and cleaning. open_clip
cleans every text in Python before tokenising it (`ftfy.fix_text`, HTML unescaping twice, then
whitespace collapsing, lowercasing or canonicalising); ftfy's heuristics (mojibake repair among
them) have no `tokenizers` equivalent, so that step runs here with the same library, and the ids
equal open_clip's (tests/offline/test_tokenizer_parity.py checks it).
"""

import html
import string
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import ftfy
import numpy as np
from tokenizers import Tokenizer

from cliper.manifest import TokenizerSpec

_PUNCTUATION = str.maketrans("", "", string.punctuation)


class TokenBatch(NamedTuple):
    """int64 arrays (B, context_length); the mask is 1 on real tokens (specials included)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray


def clean_text(text: str, mode: str) -> str:
    """open_clip's cleaning functions (`TokenizerSpec.clean`), without torch."""
    if mode == "none":
        return text
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    if mode == "canonicalize":
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
    text = " ".join(text.split())
    return text.lower() if mode == "lower" else text


def configure(tokenizer: Tokenizer, spec: TokenizerSpec) -> None:
    """Truncate and pad to the context length, in place."""
    tokenizer.enable_truncation(max_length=spec.context_length)
    pad_token = tokenizer.id_to_token(spec.pad_id)
    if pad_token is None:
        raise ValueError(f"the tokenizer has no token with the pad id {spec.pad_id}")
    tokenizer.enable_padding(length=spec.context_length, pad_id=spec.pad_id, pad_token=pad_token)


class TextTokenizer:
    """Texts -> fixed-length int64 ids and mask, as open_clip's tokenizer would give them."""

    def __init__(self, tokenizer: Tokenizer, spec: TokenizerSpec) -> None:
        self.spec = spec
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        configure(self._tokenizer, spec)
        self._counter = Tokenizer.from_str(tokenizer.to_str())
        self._counter.no_truncation()
        self._counter.no_padding()

    @classmethod
    def from_file(cls, path: Path | str, spec: TokenizerSpec) -> "TextTokenizer":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for unparsable files
            raise ValueError(f"{path} is not a valid `tokenizers` file: {exc}") from exc
        return cls(tokenizer, spec)

    def encode_batch(self, texts: Sequence[str]) -> TokenBatch:
        encodings = self._tokenizer.encode_batch([clean_text(text, self.spec.clean) for text in texts])
        shape = (len(texts), self.spec.context_length)
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64).reshape(shape)
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64).reshape(shape)
        return TokenBatch(input_ids, attention_mask)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` before truncation, special tokens included (fits if <= context)."""
        return len(self._counter.encode(clean_text(text, self.spec.clean)).ids)


def trim_padding(input_ids: np.ndarray, pad_id: int) -> np.ndarray:
    """Drop the trailing columns that are padding in every row (at least one column stays).

    Only for text encoders whose sequence axis is dynamic (a Hugging Face tower masks its
    padding, so the features do not change); CLIP's own tower needs the full context length.
    """
    used = np.flatnonzero((input_ids != pad_id).any(axis=0))
    return input_ids[:, : (used[-1] + 1 if len(used) else 1)]

