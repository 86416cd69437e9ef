"""face_jax.models.collection: the bundled zoo and a user-made collection; manifest errors."""

import json
import pathlib

import numpy as np
import pytest

import face_jax
from face_jax import models
from face_jax.models import collection as collection_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
ZOO_WEIGHTS = ROOT / 'benchmarks' / 'zoo' / 'weights'


def _images(n=6, seed=0, channels=1):
  return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, channels), dtype=np.uint8)


def test_the_bundled_zoo_is_a_collection():
  coll = models.load_collection(ZOO_WEIGHTS)
  manifest = json.loads((ZOO_WEIGHTS / 'manifest.json').read_text())
  assert coll.names == tuple(manifest['models']) and len(coll) == 16
  assert 'recipe' in coll.metadata
  images = _images()
  for entry in coll:
    raw = manifest['models'][entry.name]
    assert entry.preset == raw['preset'] and dict(entry.options) == raw['options']
    assert entry.sha256 == raw['sha256'] and pathlib.Path(entry.weights).is_file()
    for key in ('arch', 'source', 'loss', 'source_val_accuracy', 'feature_layer', 'feature_dim'):
      assert entry.metadata[key] == raw[key], (entry.name, key)
    # models.get(preset, **options) rebuilds the model the manifest describes.
    ex = entry.build()
    assert ex.default_layer == raw['feature_layer'] and ex.feature_dim() == raw['feature_dim']
    again = models.get(raw['preset'], weights=entry.weights, **raw['options'])
    a = ex.embed(images, [ex.default_layer, 'logits'])
    b = again.embed(images, [ex.default_layer, 'logits'])
    assert a['logits'].shape == (6, raw['source_classes'])
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_a_user_collection_round_trips(tmp_path):
  images = _images(channels=3)
  a = models.get('cnn_tiny', num_classes=5, seed=1)
  b = models.get('mlp', hidden=(32, 16), seed=2)
  folder = tmp_path / 'mine'
  ea = models.add_to_collection(folder, 'cnn_a', a.params, 'cnn_tiny', source='toy', loss='ce')
  # A manifest entry written by hand, as the module docstring documents it.
  models.save_params(folder / 'mlp_b.ckpt', b.params)
  doc = json.loads((folder / 'manifest.json').read_text())
  doc['models']['mlp_b'] = {
      'preset': 'mlp',
      'options': {'hidden': [32, 16]},
      'weights': 'mlp_b.ckpt',
      'sha256': collection_lib.file_sha256(folder / 'mlp_b.ckpt'),
      'source_val_accuracy': 0.5,
  }
  (folder / 'manifest.json').write_text(json.dumps(doc))
  coll = models.load_collection(folder / 'manifest.json')
  assert coll.names == ('cnn_a', 'mlp_b') and 'cnn_a' in coll and coll['cnn_a'] == ea
  assert dict(coll['cnn_a'].metadata) == {'source': 'toy', 'loss': 'ce'}
  assert dict(coll['mlp_b'].metadata) == {'source_val_accuracy': 0.5}
  coll.verify()
  for entry, ref in zip(coll, (a, b)):
    ex = entry.build()
    layers = [ref.default_layer]
    np.testing.assert_array_equal(
        ex.embed(images, layers)[layers[0]], ref.embed(images, layers)[layers[0]]
    )
  assert coll['cnn_a'].build(num_classes=0).layer_names[-1] != 'logits'
  flat = models.load_params(folder / 'cnn_a.msgpack')
  assert set(coll['cnn_a'].load_params()) == set(flat)
  # Replacing an entry keeps one entry of that name, at the end.
  models.add_to_collection(folder, 'cnn_a', a.params, 'cnn_tiny')
  assert models.load_collection(folder).names == ('mlp_b', 'cnn_a')
  with pytest.raises(KeyError, match='no model'):
    coll['nope']


def _write(folder, doc):
  folder.mkdir(exist_ok=True)
  (folder / 'manifest.json').write_text(doc if isinstance(doc, str) else json.dumps(doc))
  return folder


@pytest.mark.parametrize(
    'doc, message',
    [
        ('{"models": ', 'not valid JSON'),
        ([1, 2], 'expected an object with a "models" object'),
        ({'models': {}}, 'has no models'),
        ({'models': {'m': 3}}, "model 'm': expected an object"),
        ({'models': {'m': {'preset': 'mlp'}}}, r"missing field\(s\) \['sha256'\]"),
        ({'models': {'m': {'preset': 'nope', 'sha256': '0' * 64}}}, "unknown preset 'nope'"),
        ({'models': {'m': {'preset': 'mlp', 'sha256': 'abc'}}}, 'sha256 must be 64'),
        (
            {'models': {'m': {'preset': 'mlp', 'sha256': '0' * 64, 'options': [1]}}},
            'options must be an object',
        ),
        (
            {'models': {'m': {'preset': 'mlp', 'sha256': '0' * 64, 'options': {'weights': 'x'}}}},
            'must not hold "weights"',
        ),
        (
            {'models': {'m': {'preset': 'mlp', 'sha256': '0' * 64, 'weights': '/abs.msgpack'}}},
            'relative to the collection',
        ),
    ],
)
def test_bad_manifests_are_input_errors(tmp_path, doc, message):
  folder = _write(tmp_path / 'c', doc)
  with pytest.raises(face_jax.InputError, match=message):
    models.load_collection(folder)


def test_missing_and_corrupt_weights(tmp_path):
  with pytest.raises(face_jax.InputError, match='manifest.json is missing'):
    models.load_collection(tmp_path)
  ex = models.get('cnn_tiny', in_channels=1)
  entry = models.add_to_collection(tmp_path, 'm', ex.params, 'cnn_tiny', {'in_channels': 1})
  path = pathlib.Path(entry.weights)
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 0xFF
  path.write_bytes(bytes(data))
  coll = models.load_collection(tmp_path)
  with pytest.raises(face_jax.InputError, match="model 'm'.*sha256 .* but the manifest records"):
    coll['m'].build()
  with pytest.raises(ValueError, match='corrupt or was replaced'):
    coll.verify()
  path.unlink()
  with pytest.raises(face_jax.InputError, match='m.msgpack is missing'):
    coll['m'].build()
  with pytest.raises(face_jax.InputError, match='weights come from the collection'):
    coll['m'].build(weights=None)


def test_bad_options_and_metadata(tmp_path):
  ex = models.get('cnn_tiny')
  with pytest.raises(face_jax.InputError, match='entry fields'):
    models.add_to_collection(tmp_path, 'm', ex.params, 'cnn_tiny', sha256='x')
  entry = models.add_to_collection(tmp_path, 'm', ex.params, 'cnn_tiny', {'depth': 3})
  with pytest.raises(face_jax.InputError, match=r"model 'm' \(cnn_tiny.*unknown option"):
    entry.build()
