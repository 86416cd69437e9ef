"""Models + datasets end to end: a Flax forward pass streamed into the statistics."""

import warnings

import jax
import numpy as np
import pytest

import face_jax
from face_jax import data, models
from face_jax._src import engine as engine_lib


@pytest.fixture(scope='module')
def digits_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp('tfds'))


def _unpadded(pipe, key):
  xs, ys = [], []
  for b in pipe:
    m = b['_mask']
    xs.append(b[key][m])
    ys.append(b['label'][m])
  return np.concatenate(xs), np.concatenate(ys)


def test_digits_end_to_end_matches_embed(digits_dir):
  pipe = data.get('digits', 'all', data_dir=digits_dir, batch_size=128)  # 1797 = 14·128 + 5
  ex = models.get('cnn_small', image_size=16, num_classes=10, seed=3)
  eng = face_jax.Engine()
  before = engine_lib.TRACE_COUNTS['step']
  out = face_jax.score_model(ex, pipe, layers=('block1', 'pool'), engine=eng)
  assert eng.passes_run == 1  # label counts known: one pass, two layers
  assert engine_lib.TRACE_COUNTS['step'] - before == 1
  images, labels = _unpadded(pipe, 'image')
  assert len(labels) == pipe.num_examples == 1797
  emb = ex.embed(images, ('block1', 'pool'))
  for layer in ('block1', 'pool'):
    r = out[layer]['face']
    assert r.diagnostics['N'] == 1797  # every example counted exactly once
    np.testing.assert_array_equal(r.class_counts, pipe.label_counts())
    assert r.diagnostics['D'] == ex.feature_dim(layer)
    ref = face_jax.face_score(emb[layer], labels)
    np.testing.assert_allclose(r.score, ref.score, rtol=1e-5)
    np.testing.assert_allclose(r.nc1, ref.nc1, rtol=1e-5)


def test_in_memory_images_and_bad_input():
  rng = np.random.default_rng(0)
  y = rng.integers(0, 4, 150)
  images = (rng.integers(0, 60, (150, 12, 12, 1)) + 40 * y[:, None, None, None]).astype(np.uint8)
  out = face_jax.score_model(
      'mlp',
      (images, y),
      batch_size=64,
      model_options=dict(image_size=12, hidden=(32,), num_classes=7),
  )
  r = out['dense1']['face']
  assert r.diagnostics['N'] == 150 and np.isfinite(r.score)
  with pytest.raises(face_jax.InputError, match='unknown layer'):
    face_jax.score_model('mlp', (images, y), layers='nope', model_options=dict(image_size=12))
  with pytest.raises(face_jax.InputError, match='labels are outside'):
    face_jax.score_model('mlp', (images, y), num_classes=3, model_options=dict(image_size=12))
  with pytest.raises(face_jax.InputError, match='uint8'):
    face_jax.score_model('mlp', (images.astype(np.float32), y), model_options=dict(image_size=12))


@pytest.mark.parametrize('resize', ['features_to_labels', 'labels_to_features'])
def test_segmentation_with_ignore_labels(resize):
  rng = np.random.default_rng(1)
  n, h = 6, 16
  labels = rng.integers(0, 3, (n, h, h))
  labels[:, :3] = 255  # ignored rows of pixels
  labels[0, 5, 5] = 255
  images = rng.integers(0, 256, (n, h, h, 3), dtype=np.uint8)
  ex = models.get('resnet_mini', depth=8, image_size=16, seed=0)
  layer = ex.dense_layer_names[-1]
  out = face_jax.score_model(
      ex,
      (images, labels),
      task='segmentation',
      num_classes=3,
      resize=resize,
      batch_size=4,
      layers=layer,
  )
  r = out[layer]['face']
  fmap = ex.embed(images, layer, dense=True)[layer]  # [n, hf, wf, C]
  hf = fmap.shape[1]
  if resize == 'features_to_labels':
    up = np.asarray(jax.image.resize(fmap, (n, h, h, fmap.shape[-1]), 'bilinear'))
    lab = labels
  else:
    idx = np.clip(np.floor((np.arange(hf) + 0.5) * h / hf).astype(int), 0, h - 1)
    lab = labels[:, idx][:, :, idx]
    up = fmap
  keep = lab != 255
  assert r.diagnostics['N'] == keep.sum()  # every labelled pixel, nothing else
  ref = face_jax.face_score(up[keep], lab[keep])
  np.testing.assert_allclose(r.score, ref.score, rtol=1e-4)
  with pytest.raises(face_jax.InputError, match='num_classes is required'):
    face_jax.score_model(ex, (images, labels), task='segmentation')


def test_wordnet_text_with_minilm(tmp_path):
  pipe = data.get('wordnet_glosses', 'test', data_dir=str(tmp_path), batch_size=64, subsample=40)
  ex = models.get('all-minilm-l6-v2', max_length=32)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', face_jax.FaceJaxWarning)  # rare lexnames may be empty
    out = face_jax.score_model(ex, pipe, layers=('layer3', 'sentence_embedding'), metrics=('face',))
  texts, labels = _unpadded(pipe, 'text')
  emb = ex.embed(list(texts), ('layer3', 'sentence_embedding'))
  for layer in ('layer3', 'sentence_embedding'):
    r = out[layer]['face']
    assert r.diagnostics['N'] == pipe.num_examples
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', face_jax.FaceJaxWarning)
      ref = face_jax.face_score(emb[layer], labels, num_classes=pipe.num_classes)
    np.testing.assert_allclose(r.score, ref.score, rtol=1e-4)
