"""Finalised statistics do not depend on batch boundaries or on the order of the rows.

The same rows streamed in steps of 23 or 64, in a permuted order, or as uneven user
batches (``IterableSource``) give the same ``ClassMoments`` and ``ClassCovariances``.
Each run accumulates about its own first batch's class means (``FIRST_BATCH_SHIFT``),
so the shift that ``finalize`` undoes differs between runs too.  Tolerances: float64
``1e-10``, float32 ``1e-5`` (compensated float32 sums, as tests/test_engine.py),
relative to each array's largest entry for the near-zero ones.
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import face_jax
from face_jax import engine
from tests.property import strategies as pst

RTOL = {'float64': 1e-10, 'float32': 1e-5}


def run_moments(data, source, weight=None):
  """(ClassMoments, ClassCovariances) of one pass over ``source``."""
  k, d = data.num_classes, data.x.shape[1]
  eng = face_jax.Engine(dtype=data.dtype)
  out = eng.run_pass(source, {'features': pst.moments_requests(k, d, data.dtype, weight)})
  return out['features']['m'], out['features']['cs']


def assert_same_statistics(got, want, rtol):
  (gm, gc), (wm, wc) = got, want
  np.testing.assert_array_equal(gm.counts, wm.counts)
  np.testing.assert_array_equal(gc.counts, wc.counts)
  for name in ('means', 'sums', 'var_diag', 'within_scatter'):
    pst.assert_close(getattr(gm, name), getattr(wm, name), rtol, err_msg=name)
  pst.assert_close(gc.means, wc.means, rtol, err_msg='class scatter means')
  pst.assert_close(gc.scatter, wc.scatter, rtol, err_msg='class scatter')


@given(
    data=pst.datasets(),
    batches=st.sampled_from(((23, 64), (64, 23), (64, 64))),
    seed=st.integers(0, 2**31 - 1),
)
def test_batch_boundaries_and_row_order_do_not_matter(data, batches, seed):
  rng = np.random.default_rng(seed)
  n, k = data.y.size, data.num_classes
  weight = rng.uniform(0.5, 2.0, size=k)
  b1, b2 = batches

  def array_source(x, y, b):
    return engine.ArraySource(x, y, batch_size=b, feat_dtype=data.dtype)

  want = run_moments(data, array_source(data.x, data.y, b1), weight)
  perm = rng.permutation(n)
  got = run_moments(data, array_source(data.x[perm], data.y[perm], b2), weight)
  assert_same_statistics(got, want, RTOL[data.dtype])
  # Uneven user batches (split or padded to steps of 64 rows) in another order.
  perm = rng.permutation(n)
  cuts = np.sort(rng.choice(np.arange(1, n), size=min(n - 1, 5), replace=False))
  parts = [(data.x[p], data.y[p]) for p in np.split(perm, cuts)]
  stream = engine.IterableSource(parts, num_classes=k, batch_size=64, dtype=data.dtype)
  assert_same_statistics(run_moments(data, stream, weight), want, RTOL[data.dtype])
  # And the class moments are the data's.
  fin = want[0]
  x64 = data.x64
  np.testing.assert_array_equal(fin.counts, np.bincount(data.y, minlength=k))
  mus = np.stack([x64[data.y == c].mean(0) for c in range(k)])
  pst.assert_close(fin.means, mus, RTOL[data.dtype])
