"""Item text -> prompts -> text-encoder feeds, reproducing the offline features without torch.

Prompts come from the bundle's views (`cliper.views`), long values are chunked exactly as the
offline job chunks them, and token ids come from `cliper.tokenizer` (open_clip's cleaning, then
the bundle's `tokenizer.json`).
"""

from collections.abc import Mapping

import numpy as np

from cliper.manifest import Chunking
from cliper.tokenizer import TextTokenizer, trim_padding
from cliper.views import ViewsConfig, chunk_prompts


def text_feeds(tokenizer: TextTokenizer, prompts: list[str], trim: bool) -> dict[str, np.ndarray]:
    """`input_ids` (and `attention_mask` when the encoder takes it), int64 [B, L].

    With `trim` (a text encoder whose sequence axis is dynamic) the columns that are padding in
    every row are dropped: the masked tower gives the same features, for less work.
    """
    batch = tokenizer.encode_batch(prompts)
    input_ids = trim_padding(batch.input_ids, tokenizer.spec.pad_id) if trim else batch.input_ids
    feeds = {"input_ids": input_ids}
    if tokenizer.spec.uses_attention_mask:
        feeds["attention_mask"] = batch.attention_mask[:, : input_ids.shape[1]]
    return feeds


def item_prompts(
    views: ViewsConfig, fields: Mapping[str, str], tokenizer: TextTokenizer, chunking: Chunking
) -> list[list[str]]:
    """The prompts of each view (global last) for one item; a long value gives several chunks."""
    return [
        chunk_prompts(template, value, tokenizer.count_tokens, tokenizer.spec.context_length, chunking.max_chunks)
        for template, value in views.view_texts(fields)
    ]
