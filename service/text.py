"""Item text -> prompts -> token ids, reproducing the offline features without torch.

Prompts come from the bundle's views (`cliper.views`), long values are chunked exactly as the
offline job chunks them, and token ids follow the manifest's `TokenizerSpec` (open_clip's
text cleaning, then the bundle's `tokenizer.json`).
"""

import html
import string
from collections.abc import Mapping
from pathlib import Path

import ftfy
import numpy as np
from tokenizers import Tokenizer

from cliper.manifest import Chunking, TokenizerSpec
from cliper.views import ViewsConfig, chunk_prompts

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_text(text: str, mode: str) -> str:
    """open_clip's tokenizer cleaning (`basic_clean` + the named variant)."""
    if mode == "none":
        return text
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    if mode == "canonicalize":
        text = text.replace("_", " ").translate(_PUNCTUATION).lower()
    text = " ".join(text.split())
    return text.lower() if mode == "lower" else text


class PromptTokenizer:
    """Counts and encodes prompts as the offline CLIP tokenizer does."""

    def __init__(self, path: Path, spec: TokenizerSpec) -> None:
        self.spec = spec
        self._counter = Tokenizer.from_file(str(path))
        self._counter.no_truncation()
        self._counter.no_padding()
        self._encoder = Tokenizer.from_file(str(path))
        self._encoder.enable_truncation(max_length=spec.context_length)
        self._encoder.enable_padding(length=spec.context_length, pad_id=spec.pad_id)

    def count(self, prompt: str) -> int:
        """Tokens of a prompt with special tokens and without truncation."""
        return len(self._counter.encode(clean_text(prompt, self.spec.clean)).ids)

    def encode(self, prompts: list[str]) -> dict[str, np.ndarray]:
        """Text-encoder inputs: `input_ids` (and `attention_mask` when the model takes it), int64 [B, L]."""
        encodings = self._encoder.encode_batch([clean_text(p, self.spec.clean) for p in prompts])
        feeds = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64)}
        if self.spec.uses_attention_mask:
            feeds["attention_mask"] = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        return feeds


def item_prompts(
    views: ViewsConfig, fields: Mapping[str, str], tokenizer: PromptTokenizer, chunking: Chunking
) -> list[list[str]]:
    """The prompts of each view (global last) for one item; a long value gives several chunks."""
    return [
        chunk_prompts(template, value, tokenizer.count, tokenizer.spec.context_length, chunking.max_chunks)
        for template, value in views.view_texts(fields)
    ]
