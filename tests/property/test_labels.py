"""Renaming the classes permutes every per-class output and leaves every score unchanged.

With ``y' = π(y)`` for a permutation π of ``[0, K)``: class counts, class means,
per-class scatters and FaCe's per-class overlaps move to the new labels
(``out'[π(c)] = out[c]``), and every score keeps its value.  Every metric of the
library treats the target classes symmetrically (sums or averages over classes,
one-hot targets, per-class Gaussians), so all of them are label-permutation
invariant by definition; per-class outputs are equivariant instead.  (LEEP and NCE
are invariant under a renaming of the target classes, the one done here; the
source classes are the columns of ``source_probs`` and are left as they are.)
NLEEP is left out for time: it fits a Gaussian mixture to the features alone and
then scores LEEP, invariant like LEEP.

The rows keep their order, so every per-class sum adds the same numbers in the same
order and, in float64, only the host's sums over classes change order: tolerance
``1e-8`` (the float64 oracle tolerance).  In float32 a statistic accumulated about
one common centre taken from class 0 (H-score's ``NormMoments``: the first row of
its shift) is rounded about another point after the renaming: tolerance ``1e-5``
(the float32 tolerance of tests/test_engine.py; observed <= 7e-7, the regularised
H-score).  Near-zero entries (tiny overlaps) are compared relative to the largest.
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import face_jax
from face_jax import engine
from tests.property import strategies as pst
from tests.property import test_streaming

RTOL = {'float64': 1e-8, 'float32': 1e-5}
MULTI_PASS = ('sfda', 'ncti', 'etran', 'parc')
MULTI_PASS_OPTIONS = {'ncti': {'pca_dim': 4}, 'parc': {'n_dims': 4}}


def _relabel(data, seed):
  perm = np.random.default_rng(seed).permutation(data.num_classes)
  return perm, perm[data.y]


@given(data=pst.datasets(), seed=st.integers(0, 2**31 - 1))
def test_per_class_statistics_follow_the_labels(data, seed):
  perm, y2 = _relabel(data, seed)
  k, d = data.num_classes, data.x.shape[1]

  def run(y):
    src = engine.ArraySource(data.x, y, batch_size=pst.BATCH, feat_dtype=data.dtype)
    return test_streaming.run_moments(data, src)

  (m1, c1), (m2, c2) = run(data.y), run(y2)
  assert m1.counts.shape == (k,) and m1.means.shape == (k, d)
  np.testing.assert_array_equal(m2.counts[perm], m1.counts)
  np.testing.assert_array_equal(c2.counts[perm], c1.counts)
  pst.assert_close(m2.means[perm], m1.means, RTOL[data.dtype])
  pst.assert_close(m2.var_diag[perm], m1.var_diag, RTOL[data.dtype])
  pst.assert_close(m2.within_scatter, m1.within_scatter, RTOL[data.dtype])
  pst.assert_close(c2.scatter[perm], c1.scatter, RTOL[data.dtype])


@given(data=pst.datasets(), seed=st.integers(0, 2**31 - 1))
def test_one_pass_scores_are_invariant(data, seed):
  perm, y2 = _relabel(data, seed)
  a, b = pst.one_pass_scores(data), pst.one_pass_scores(data, y=y2)
  for m in pst.ONE_PASS:
    pst.assert_close(pst.as_float(b[m]), pst.as_float(a[m]), RTOL[data.dtype], err_msg=m)
  fa, fb = a['face'], b['face']
  for f in pst.FACE_FIELDS:
    pst.assert_close(getattr(fb, f), getattr(fa, f), RTOL[data.dtype], err_msg=f)
  np.testing.assert_array_equal(fb.classes, fa.classes)  # every class is populated
  np.testing.assert_array_equal(fb.class_counts[perm], fa.class_counts)
  pst.assert_close(fb.overlap[perm], fa.overlap, RTOL[data.dtype])


@given(
    data=pst.datasets(shapes=(pst.SHAPES[1],), min_n=200, max_per_class=60),
    seed=st.integers(0, 2**31 - 1),
)
def test_multi_pass_scores_are_invariant(data, seed):
  _, y2 = _relabel(data, seed)
  kw = dict(metrics=MULTI_PASS, metric_options=MULTI_PASS_OPTIONS, batch_size=pst.BATCH)
  a = face_jax.score(data.x, data.y, **kw)
  b = face_jax.score(data.x, y2, **kw)
  for m in MULTI_PASS:
    va = np.array(a[m].astuple() if hasattr(a[m], 'astuple') else [float(a[m])])
    vb = np.array(b[m].astuple() if hasattr(b[m], 'astuple') else [float(b[m])])
    pst.assert_close(vb, va, RTOL[data.dtype], err_msg=m)
