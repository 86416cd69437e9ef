"""A common scale and translation of the features leaves the scale-free scores unchanged.

``x' = a·x + b`` (a > 0 scalar, b [D]) leaves NC1, VCI, the H-score and FaCe unchanged:
every one is a ratio of scatter matrices about means.  Every FaCe variant is scale-free
except through the variance floor ``VAR_FLOOR = 1e-4`` of the "diagonal" and
"spherical" class Gaussians, which clips per-class variances below 1e-4 (the
"pooled" ridge is relative to Tr Σ_W and scales with it).  Here a >= 0.5 and every
class has at least 4 rows of unit-scale noise, so every per-class variance of both
feature sets stays far above the floor (checked: ``assume`` drops the rare draw that
comes within a factor 10 of it).  LogME, TransRate and GBC are not scale-free by
definition (fixed regularisation, coding-rate ε and the same variance floor).

Tolerances: float64 ``1e-8`` (the float64 oracle tolerance); float32 ``1e-4`` (the
float32 tolerance of the metric tests: the two feature sets are rounded to float32
independently, and |offset| <= 10, |b| <= 50 keep that rounding near 1e-6 of the noise).
FaCe's score C + λF is compared to the tolerance of |C| + |λF| (the terms can cancel).
"""

import numpy as np
from hypothesis import assume
from hypothesis import given
from hypothesis import strategies as st

import face_jax
from face_jax._src.metrics import face as face_lib
from tests.property import strategies as pst

RTOL = {'float64': 1e-8, 'float32': 1e-4}
SCALE_FREE = ('face', 'nc1', 'vci', 'hscore')
VARIANTS = st.fixed_dictionaries(
    {
        'weighting': st.sampled_from(face_lib.WEIGHTINGS),
        'vc_transform': st.sampled_from(face_lib.VC_TRANSFORMS),
        'bc_cov': st.sampled_from(face_lib.BC_COVS),
        'fairness': st.sampled_from(face_lib.FAIRNESSES),
    }
)


def _min_class_variance(x, y, k):
  return min(float(x[y == c].astype(np.float64).var(0).min()) for c in range(k))


@given(
    data=pst.datasets(max_offset=10.0),
    scale=st.floats(0.5, 100.0),
    shift=st.floats(-50.0, 50.0),
    variant=VARIANTS,
)
def test_scale_free_scores_ignore_scale_and_translation(data, scale, shift, variant):
  k, d = data.num_classes, data.x.shape[1]
  b = shift * np.linspace(-1.0, 1.0, d)
  x2 = (data.x64 * scale + b).astype(data.dtype)
  floor = face_lib.VAR_FLOOR
  assume(
      min(_min_class_variance(data.x, data.y, k), _min_class_variance(x2, data.y, k)) > 10 * floor
  )
  rtol = RTOL[data.dtype]
  a = pst.one_pass_scores(data, metrics=SCALE_FREE)
  t = pst.one_pass_scores(data, x=x2, metrics=SCALE_FREE)
  for m in SCALE_FREE[1:]:
    pst.assert_close(t[m], a[m], rtol, err_msg=m)
  pst.assert_face_close(t['face'], a['face'], rtol)
  fa = face_jax.face_score(data.x, data.y, batch_size=pst.BATCH, **variant)
  ft = face_jax.face_score(x2, data.y, batch_size=pst.BATCH, **variant)
  pst.assert_face_close(ft, fa, rtol)
