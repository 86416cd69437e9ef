"""Digits end to end (tfds pipeline -> Flax CNN -> sharded statistics) on 8 fake devices."""

import jax
import numpy as np

import face_jax
from face_jax import data, models

assert jax.device_count() == 8, jax.devices()


def test_digits_eight_devices_equal_one(tmp_path):
  pipe = data.get('digits', 'all', data_dir=str(tmp_path), batch_size=100)  # 1797: padded
  ex = models.get('cnn_tiny', image_size=16, seed=0)
  eight = face_jax.score_model(ex, pipe, layers=('block1', 'pool'))
  one = face_jax.score_model(
      ex,
      pipe,
      layers=('block1', 'pool'),
      engine=face_jax.Engine(face_jax.default_mesh(jax.devices()[:1])),
  )
  for layer in ('block1', 'pool'):
    r8, r1 = eight[layer]['face'], one[layer]['face']
    assert r8.diagnostics['N'] == r1.diagnostics['N'] == 1797
    np.testing.assert_array_equal(r8.class_counts, pipe.label_counts())
    for f in ('score', 'variance_collapse', 'class_fairness', 'nc1'):
      np.testing.assert_allclose(getattr(r8, f), getattr(r1, f), rtol=1e-5, err_msg=f)
