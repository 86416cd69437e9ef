"""face_jax.models feature functions on 8 fake CPU devices: batch sharded over a mesh axis,
params replicated with NamedSharding; results equal the single-device ones."""

# Runs in the 8-fake-device process launched by tests/test_multidevice.py
# (tests/multidevice/__init__.py sets XLA_FLAGS before JAX starts).

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # pylint: disable=all

from face_jax import models  # pylint: disable=g-import-not-at-top,wrong-import-position


def test_eight_devices():
  assert jax.device_count() == 8


@pytest.mark.parametrize(
    "name,opts,layers",
    [
        ("resnet_mini", dict(depth=8, image_size=8), ("layer1", "pool")),
        ("vit_mini", dict(image_size=8, depth=1), ("block0", "pool")),
    ],
)
def test_sharded_feature_fn_matches_single_device(name, opts, layers):
  assert jax.device_count() == 8
  ex = models.get(name, **opts)
  images = np.random.default_rng(0).integers(0, 256, size=(16, 8, 8, 3), dtype=np.uint8)
  want = ex.embed(images, layers, batch_size=16)

  mesh = Mesh(np.array(jax.devices()), ("data",))
  params = jax.device_put(ex.params, NamedSharding(mesh, P()))
  batch = jax.device_put(ex.host_preprocess(images), NamedSharding(mesh, P("data")))
  fn = jax.jit(ex.feature_fn(layers), out_shardings=NamedSharding(mesh, P("data")))
  out = fn(params, batch)
  for l in layers:
    assert len(out[l].sharding.device_set) == 8
    np.testing.assert_allclose(np.asarray(jax.device_get(out[l])), want[l], rtol=1e-5, atol=1e-5)
