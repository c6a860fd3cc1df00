"""open_clip's tokenizer as a `tokenizers` file (`tokenizer.json`) plus the manifest's `TokenizerSpec`.

- `SimpleTokenizer` (CLIP's BPE): rebuilt from the open_clip object's own vocabulary and merge
  ranks as a byte-level BPE with the `</w>` end-of-word suffix, CLIP's split regex, and
  <start_of_text> ... <end_of_text> around every text (the layout of HF's CLIPTokenizerFast,
  without its GPT-2 re-split).
- `HFTokenizer` (e.g. the MiniLM tower): the wrapped HF tokenizer's own `tokenizers` backend.

The normaliser (NFC, whitespace, lowercase unless the cleaning keeps case) repeats what
`cliper.tokenizer.clean_text` already did, so the file alone also serves texts that need no
fixing; it differs from open_clip on HTML entities, ftfy's repairs (curly quotes, ligatures,
fullwidth characters, mojibake, control characters) and a word-final capital sigma. One known difference
remains, shared by HF's CLIP tokenizer: a literal "<start_of_text>" or "<end_of_text>" in a
text right after punctuation (e.g. "!<end_of_text>") is one special id for `tokenizers` but
BPE pieces for open_clip, whose regex has already consumed the "<" into the punctuation run.
"""

from pathlib import Path

from open_clip import tokenizer as oc_tokenizer
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from cliper.manifest import TokenizerSpec
from cliper.tokenizer import configure

CLIP_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""  # open_clip's, case-insensitive
OpenClipTokenizer = oc_tokenizer.SimpleTokenizer | oc_tokenizer.HFTokenizer
_CLEAN_MODES = {
    oc_tokenizer._clean_lower: "lower",
    oc_tokenizer._clean_whitespace: "whitespace",
    oc_tokenizer._clean_canonicalize: "canonicalize",
}


def export_tokenizer(tokenizer: OpenClipTokenizer, path: Path) -> TokenizerSpec:
    """Write `tokenizer` as a `tokenizers` file at `path`; return its spec for the manifest."""
    if isinstance(tokenizer, oc_tokenizer.SimpleTokenizer):
        converted = _clip_bpe(tokenizer)
        pad_id = 0  # open_clip pads with zeros (the id of "!")
    elif isinstance(tokenizer, oc_tokenizer.HFTokenizer):
        converted = _hf(tokenizer)
        pad_id = tokenizer.tokenizer.pad_token_id
    else:
        raise TypeError(
            f"cannot export a {type(tokenizer).__name__}: only open_clip's SimpleTokenizer "
            "(CLIP BPE) and HFTokenizer are supported"
        )
    spec = TokenizerSpec(
        file=path.name,
        context_length=tokenizer.context_length,
        pad_id=pad_id,
        uses_attention_mask=False,  # the text encoders compute their masks from the ids
        clean=_clean_mode(tokenizer),
    )
    configure(converted, spec)
    path.parent.mkdir(parents=True, exist_ok=True)
    converted.save(str(path))
    return spec


def _clean_mode(tokenizer: OpenClipTokenizer) -> str:
    if tokenizer.clean_fn not in _CLEAN_MODES:
        raise ValueError(f"open_clip clean function {tokenizer.clean_fn.__name__} is not supported")
    return _CLEAN_MODES[tokenizer.clean_fn]


def _clip_bpe(tokenizer: oc_tokenizer.SimpleTokenizer) -> Tokenizer:
    if tokenizer.reduction_fn is not None:
        raise ValueError("a SimpleTokenizer with a reduction mask (random truncation) cannot be exported")
    merges = sorted(tokenizer.bpe_ranks, key=tokenizer.bpe_ranks.__getitem__)
    special = [tokenizer.decoder[i] for i in tokenizer.all_special_ids]
    converted = Tokenizer(
        models.BPE(
            vocab=tokenizer.encoder,
            merges=merges,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
        )
    )
    converted.add_special_tokens(special)
    steps = [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " ")]
    if _clean_mode(tokenizer) != "whitespace":  # "lower" and "canonicalize" lowercase
        steps.append(normalizers.Lowercase())
    converted.normalizer = normalizers.Sequence(steps)
    converted.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    converted.decoder = decoders.ByteLevel()
    sot, eot = special[0], special[1]
    converted.post_processor = processors.TemplateProcessing(
        single=f"{sot} $A {eot}",
        special_tokens=[(sot, tokenizer.sot_token_id), (eot, tokenizer.eot_token_id)],
    )
    return converted


def _hf(tokenizer: oc_tokenizer.HFTokenizer) -> Tokenizer:
    if tokenizer.tokenizer_mode or tokenizer.strip_sep_token:
        raise ValueError(
            "an HFTokenizer with tokenizer_mode or strip_sep_token cannot be exported; "
            "use the plain HF tokenizer (the shipped configs do)"
        )
    return Tokenizer.from_str(tokenizer.tokenizer.backend_tokenizer.to_str())
