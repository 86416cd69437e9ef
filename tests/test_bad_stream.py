"""Bad data late in a stream: an error naming the batch and rows, or, opted in, rows skipped and reported."""

import warnings

import numpy as np
import pytest

import face_jax
from face_jax import FaceJaxWarning, InputError
from face_jax._src import api
from tests import cases

BATCH = 50


def _data(n=300):
  x, y = cases.gaussian_classes(n, 6, 3, seed=0)
  p = np.random.default_rng(1).dirichlet(np.ones(4), n)
  return x.astype(np.float32), y, p.astype(np.float32)


def _batches(x, y, p=None):
  out = []
  for i in range(0, len(y), BATCH):
    extras = None if p is None else {'source_probs': p[i : i + BATCH]}
    out.append((x[i : i + BATCH], y[i : i + BATCH], extras))
  return out


def test_non_finite_error_names_batch_rows_and_count():
  x, y, _ = _data()
  x[260, 1] = np.nan
  x[262, :2] = np.inf
  with pytest.raises(
      InputError, match=r'batch 5: 3 non-finite feature values \(stream rows 260, 262\)'
  ):
    face_jax.score(_batches(x, y), metrics=('nc1',), num_classes=3)
  with pytest.raises(
      InputError,
      match=r'batch 5 \(rows 250:300\): 3 non-finite feature values \(stream rows 260, 262\)',
  ):
    face_jax.score(x, y, metrics=('nc1',), batch_size=BATCH)


@pytest.mark.parametrize('stream', [False, True])
def test_skip_drops_counts_and_reports_non_finite_rows(stream):
  x, y, p = _data()
  bad = [20, 130, 131, 299]
  keep = np.setdiff1d(np.arange(len(y)), bad)
  x[20, 0], x[130, :] = np.nan, np.inf
  x[131, 5], x[299, 2] = -np.inf, np.nan
  metrics = ('face', 'nc1', 'logme', 'sfda', 'leep')  # 1 to 3 passes
  clean = face_jax.score(x[keep], y[keep], source_probs=p[keep], metrics=metrics, batch_size=BATCH)
  eng = face_jax.Engine(nonfinite='skip')
  if stream:
    args, kw = (_batches(x, y, p),), dict(num_classes=3)
  else:
    args, kw = (x, y), dict(source_probs=p, batch_size=BATCH)
  with pytest.warns(FaceJaxWarning, match=r"nonfinite='skip': 4 row\(s\)"):
    got = face_jax.score(*args, metrics=metrics, engine=eng, **kw)
  assert eng.dropped['features']['rows'] == 4
  assert [r for _, r in eng.dropped['features']['batches']] == [1, 2, 1]
  assert got['face'].diagnostics['nonfinite_dropped'] == eng.dropped['features']
  assert got['face'].score == pytest.approx(clean['face'].score, rel=1e-6)
  for m in ('nc1', 'logme', 'sfda', 'leep'):
    assert float(got[m]) == pytest.approx(float(clean[m]), rel=1e-5), m
  # Row subsamples number the rows: refused before any pass (start_errors sees it).
  assert set(api.start_errors(*args, metrics=('nleep', 'parc'), nonfinite='skip', **kw)) == {
      'nleep',
      'parc',
  }
  with pytest.raises(InputError, match="row subsample .* nonfinite='skip'"):
    face_jax.score(*args, metrics=('parc',), nonfinite='skip', **kw)


def test_skip_option_of_score_and_face_score():
  x, y, _ = _data()
  x[7, 3] = np.nan
  with pytest.warns(FaceJaxWarning, match='1 row'):
    r = face_jax.face_score(x, y, nonfinite='skip')
  assert r.diagnostics['nonfinite_dropped']['rows'] == 1
  with pytest.raises(InputError, match='nonfinite must be one of'):
    face_jax.score(x, y, nonfinite='drop')
  with pytest.raises(InputError, match="the engine has nonfinite='raise'"):
    face_jax.score(x, y, engine=face_jax.Engine(), nonfinite='skip')
  with warnings.catch_warnings():
    warnings.simplefilter('error')  # nothing dropped: no warning, no diagnostics entry
    r = face_jax.face_score(np.nan_to_num(x), y, nonfinite='skip')
  assert 'nonfinite_dropped' not in r.diagnostics


def test_skip_leaves_labels_and_probabilities_errors():
  x, y, p = _data()
  y = y.copy()
  y[275] = 7
  with pytest.raises(InputError, match=r'batch 5: 1 labels outside .*stream rows 275'):
    face_jax.score(_batches(x, y), metrics=('nc1',), num_classes=3, nonfinite='skip')


def test_source_probs_row_not_summing_to_one_late_in_the_stream():
  x, y, p = _data()
  p = p.copy()
  p[212] *= 1.01
  with pytest.raises(InputError, match=r'batch 4: 1 invalid source_probs rows .*stream rows 212'):
    face_jax.score(_batches(x, y, p), metrics=('leep',), num_classes=3)


def test_feature_dtype_or_extras_changing_mid_stream():
  x, y, p = _data()
  b = _batches(x, y, p)
  b[3] = (b[3][0].astype(np.float64), b[3][1], b[3][2])
  with pytest.raises(InputError, match=r"batch 3: features have dtype float64, the first batch's"):
    face_jax.score(b, metrics=('nc1',), num_classes=3)
  b = _batches(x, y, p)
  b[4] = (b[4][0], b[4][1], {'source_probs': np.pad(b[4][2]['source_probs'], ((0, 0), (0, 1)))})
  with pytest.raises(InputError, match=r"batch 4: extra 'source_probs' is float32 with trailing"):
    face_jax.score(b, metrics=('leep',), num_classes=3)
  b = _batches(x, y, p)
  b[2] = (b[2][0][:, :4], b[2][1], b[2][2])
  with pytest.raises(InputError, match="batch 2: feature dim 4 differs from the first batch's 6"):
    face_jax.score(b, metrics=('nc1',), num_classes=3)


def test_score_model_with_a_skipping_engine():
  """Models' features exist only on device: the same mask, and counts from the first pass."""
  rng = np.random.default_rng(0)
  y = rng.integers(0, 4, 150)
  images = (rng.integers(0, 60, (150, 12, 12, 1)) + 40 * y[:, None, None, None]).astype(np.uint8)
  kw = dict(
      batch_size=64,
      metrics=('face', 'nc1'),
      model_options=dict(image_size=12, hidden=(32,), num_classes=7),
  )
  want = face_jax.score_model('mlp', (images, y), **kw)['dense1']
  eng = face_jax.Engine(nonfinite='skip')
  with warnings.catch_warnings():
    warnings.simplefilter('error', FaceJaxWarning)  # nothing non-finite: nothing reported
    got = face_jax.score_model('mlp', (images, y), engine=eng, **kw)['dense1']
  assert eng.dropped == {}
  assert eng.passes_run == 2  # balanced NC1: the class counts come from the first pass
  assert got['face'].score == pytest.approx(want['face'].score, rel=1e-6)
  assert got['nc1'] == pytest.approx(want['nc1'], rel=1e-6)
