"""Property (hypothesis): finalised statistics and scores do not depend on the device count.

The same rows, in the same steps, accumulated on 1 and on 8 fake CPU devices (each
device adds its slice of every step into its own partial state; one psum merges them
at the end) give the same ``ClassMoments`` and ``ClassCovariances``, and the same
scores, at the tolerances of the batch-invariance property (tests/property/
test_streaming.py: float64 1e-10, float32 1e-5, relative to each array's largest entry
for the near-zero ones).
"""

import jax
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import face_jax
from face_jax import engine
from tests.property import strategies as pst
from tests.property.test_streaming import RTOL, assert_same_statistics

assert jax.device_count() == 8, f'expected 8 fake CPU devices, got {jax.devices()}'

ENGINES = {
    (dt, n): face_jax.Engine(face_jax.default_mesh(jax.devices()[:n]), dtype=dt)
    for dt in pst.DTYPES
    for n in (1, 8)
}
METRICS = ('face', 'nc1')
BATCH = 40  # rows per step: 5 per device on 8 devices


def _values(v):
  """FaCe: its two terms (its score is their sum, which can cancel); others: the value."""
  if isinstance(v, face_jax.FaCeResult):
    return np.array([v.variance_collapse, v.class_fairness])
  return np.array([float(v)])


@given(data=pst.datasets(), seed=st.integers(0, 2**31 - 1))
def test_statistics_and_scores_do_not_depend_on_the_device_count(data, seed):
  k, d, dt = data.num_classes, data.x.shape[1], data.dtype
  weight = np.random.default_rng(seed).uniform(0.5, 2.0, size=k)
  one, eight = ENGINES[(dt, 1)], ENGINES[(dt, 8)]
  assert (one.num_devices, eight.num_devices) == (1, 8)
  got = {}
  for n, eng in ((1, one), (8, eight)):
    src = engine.ArraySource(data.x, data.y, batch_size=BATCH, feat_dtype=dt)
    out = eng.run_pass(src, {'features': pst.moments_requests(k, d, dt, weight)})['features']
    got[n] = (out['m'], out['cs'])
  assert_same_statistics(got[8], got[1], RTOL[dt])
  s1 = face_jax.score(data.x, data.y, metrics=METRICS, batch_size=BATCH, engine=one)
  s8 = face_jax.score(data.x, data.y, metrics=METRICS, batch_size=BATCH, engine=eight)
  for m in METRICS:
    pst.assert_close(_values(s8[m]), _values(s1[m]), RTOL[dt] * 10, err_msg=m)
