"""Bad input gets a clear error that names the problem; allowed oddities get warnings."""

import numpy as np
import pytest

import face_jax
from face_jax import FaceJaxWarning, InputError
from tests import cases


def _data():
  return cases.gaussian_classes(300, 6, 3, seed=0)


def test_non_finite_features_name_batch_and_count():
  x, y = _data()
  x = x.astype(np.float32)
  x[130, 2] = np.nan
  x[131, 0] = np.inf
  with pytest.raises(InputError, match=r'batch 2 \(rows 100:150\).*2 non-finite feature values'):
    face_jax.face_score(x, y, batch_size=50)
  batches = [(x[i : i + 50], y[i : i + 50]) for i in range(0, 300, 50)]
  with pytest.raises(InputError, match=r'batch 2: 2 non-finite feature values'):
    face_jax.face_score(batches, num_classes=3)


@pytest.mark.parametrize('dtype', ['float32', 'float16', 'bfloat16'])
def test_health_counts_every_non_finite_value_exactly(dtype):
  """The per-row flag (a row sum) misses no row and its false alarms count nothing."""
  import jax
  import jax.numpy as jnp
  from face_jax._src import engine, stats

  dtype = jnp.dtype(dtype)
  big = float(jnp.finfo(dtype).max)
  x = np.ones((7, 4), dtype)
  x[1, :2] = [np.inf, -np.inf]  # sums to NaN: both values counted
  x[2, 3] = np.nan
  x[3, 0] = -np.inf
  x[4, :3] = big  # finite, but its sum overflows: a false alarm
  x[5, 1] = np.nan  # padding row: not counted
  x[6, :] = [big, -big, big, -big]  # finite; the sum need not overflow
  mask = np.array([1, 1, 1, 1, 1, 0, 1], bool)
  y = np.array([0, 1, 0, 1, 0, 7, 2], np.int32)
  health = jax.jit(engine.health_counts, static_argnums=1)
  h = np.asarray(health(stats.Batch(x, y, mask), 2))
  np.testing.assert_array_equal(h[: engine.HEALTH_DROPPED + 1], [4, 1, 0, 0])
  # The largest finite row L1 norm of the unmasked rows (float32 bits): rows 0 and 6
  # here (float16: rows 4 and 6 too; in float32 and bfloat16 their sums overflow).
  with np.errstate(over='ignore'):
    l1 = np.abs(x.astype(np.float32)).sum(1)
  want = l1[mask & np.isfinite(l1)].max()
  assert h[engine.HEALTH_AMAX].view(np.float32) == pytest.approx(want, rel=1e-6)
  x[1:4] = 1  # only the false alarm left
  h = np.asarray(health(stats.Batch(x, y, mask), 2))
  np.testing.assert_array_equal(h[: engine.HEALTH_DROPPED + 1], [0, 1, 0, 0])


def test_health_counts_bad_source_probability_rows():
  import jax
  from face_jax._src import engine, stats

  p = np.full((7, 4), 0.25, np.float32)
  p[0, 0] = np.nan
  p[1, 0] = np.inf
  p[2, :2] = [-1e-30, 0.5 + 1e-30]  # a negative entry, however small (the row sums to 1)
  p[3, 0] = 0.5  # sums to 1.25
  p[4, :] = [1.0, 0.0, 0.0, 0.0]  # one-hot: fine
  p[5, 0] = np.nan  # padding row: not counted
  p[6, :] = [0.25 + 5e-5, 0.25, 0.25, 0.25]  # within PROBS_SUM_ATOL: fine
  x = np.zeros((7, 3), np.float32)
  y = np.zeros(7, np.int32)
  mask = np.array([1, 1, 1, 1, 1, 0, 1], bool)
  health = jax.jit(engine.health_counts, static_argnums=1)
  batch = stats.Batch(x, y, mask, {'source_probs': p})
  h = np.asarray(health(batch, 2))
  np.testing.assert_array_equal(h[: len(engine.HEALTH_FIELDS)], [0, 0, 4])


def test_labels_out_of_range():
  x, y = _data()
  y = y.copy()
  y[[5, 7]] = 3
  with pytest.raises(InputError, match=r'2 labels are outside \[0, 3\).*row 5'):
    face_jax.face_score(x, y, num_classes=3)
  y[5] = -1
  with pytest.raises(InputError, match='negative'):
    face_jax.face_score(x, y)
  batches = [(x[:150], y[:150] % 3), (x[150:], np.full(150, 9))]
  with pytest.raises(InputError, match=r'batch 1: 150 labels outside \[0, num_classes\)'):
    face_jax.face_score(batches, num_classes=3)


def test_fewer_than_two_classes():
  x, _ = _data()
  with pytest.raises(InputError, match='at least 2 populated classes, got 1'):
    face_jax.face_score(x, np.zeros(len(x), int))
  with pytest.raises(InputError, match='at least 2 populated classes, got 1'):
    face_jax.face_score(x, np.full(len(x), 2), num_classes=5)


@pytest.mark.parametrize(
    'features, labels, match',
    [
        (np.zeros(10), np.zeros(10, int), 'features must be 2-D'),
        (np.zeros((10, 3), np.int32), np.zeros(10, int), 'floating point'),
        (np.zeros((10, 3)), np.zeros(9, int), '9 labels for 10 feature rows'),
        (np.zeros((10, 3)), np.zeros((10, 1), int), 'labels must be 1-D'),
        (np.zeros((10, 3)), np.zeros(10), 'labels must be integers'),
        (np.zeros((0, 3)), np.zeros(0, int), 'empty input'),
        (np.zeros((10, 3)), None, 'labels are required'),
        ('features.npz', None, 'array or an iterable'),
    ],
)
def test_bad_shapes_and_dtypes(features, labels, match):
  with pytest.raises(InputError, match=match):
    face_jax.face_score(features, labels)


def test_bad_streams():
  x, y = _data()
  with pytest.raises(InputError, match='empty stream'):
    face_jax.face_score([], num_classes=3)
  with pytest.raises(InputError, match='num_classes is required'):
    face_jax.face_score([(x, y)])
  with pytest.raises(InputError, match="batch 1: feature dim 5 differs from the first batch's 6"):
    face_jax.face_score([(x[:10], y[:10]), (x[10:20, :5], y[10:20])], num_classes=3)
  with pytest.raises(InputError, match='batch 0: expected a'):
    face_jax.face_score([x], num_classes=3)
  with pytest.raises(InputError, match='labels=None'):
    face_jax.face_score([(x, y)], y, num_classes=3)
  with pytest.raises(InputError, match='batch_size must be >= 1'):
    face_jax.face_score(x, y, batch_size=0)


def test_one_shot_iterator_needing_two_passes():
  x, y = cases.make('imbalanced')
  gen = ((x[i : i + 64], y[i : i + 64]) for i in range(0, len(y), 64))
  with pytest.raises(InputError, match='one-shot iterator'):
    face_jax.face_score(gen, num_classes=8, weighting='balanced')
  gen = ((x[i : i + 64], y[i : i + 64]) for i in range(0, len(y), 64))
  r = face_jax.face_score(gen, num_classes=8, weighting='sample')  # one pass suffices
  assert np.isfinite(r.score)


def test_empty_and_singleton_classes_warn():
  x, y = _data()
  y = y.copy()
  y[y == 1] = 0
  y[0] = 1  # class 1: a single sample; classes 3, 4: empty
  with pytest.warns(FaceJaxWarning) as rec:
    r = face_jax.face_score(x, y, num_classes=5)
  text = ' '.join(str(w.message) for w in rec)
  assert 'left out: [3, 4]' in text and 'single sample' in text
  assert r.diagnostics['left_out'] == [3, 4] and r.diagnostics['singleton_classes'] == [1]
  np.testing.assert_array_equal(r.classes, [0, 1, 2])
  assert np.isfinite(r.score)


@pytest.mark.parametrize(
    'opts, match',
    [
        (dict(weighting='uniform'), 'weighting must be one of'),
        (dict(vc_transform='log'), 'vc_transform must be one of'),
        (dict(bc_cov='full'), 'bc_cov must be one of'),
        (dict(fairness='gini'), 'fairness must be one of'),
        (dict(temperature=0.0), 'temperature must be a positive'),
        (dict(ridge=-1.0), 'ridge must be >= 0'),
        (dict(fairness_weight=float('nan')), 'fairness_weight must be finite'),
        (dict(combine='mean'), 'combine must be one of'),
    ],
)
def test_bad_options(opts, match):
  x, y = _data()
  with pytest.raises(InputError, match=match):
    face_jax.face_score(x, y, **opts)


def test_unknown_metric_and_option():
  x, y = _data()
  with pytest.raises(InputError, match="unknown metric 'nope'"):
    face_jax.score(x, y, metrics=('nope',))
  with pytest.raises(InputError, match="option 'alpha' is not accepted"):
    face_jax.score(x, y, metrics=('face',), alpha=1.0)
  with pytest.raises(InputError, match='metrics is empty'):
    face_jax.score(x, y, metrics=())
  with pytest.raises(InputError, match="face has no option 'eps'"):
    face_jax.score(x, y, metric_options={'face': {'eps': 1.0}})


def test_face_pool_errors():
  x, y = _data()
  r = face_jax.face_score(x, y)
  with pytest.raises(InputError, match='at least one model'):
    face_jax.face_pool({})
  r2 = face_jax.face_score(x, y, fairness_weight=2.0)
  with pytest.raises(InputError, match='different fairness weights'):
    face_jax.face_pool({'a': r, 'b': r2})
  collapsed = face_jax.face_score(
      np.repeat(np.eye(3), 4, 0), np.repeat(np.arange(3), 4), vc_transform='neglog'
  )
  with pytest.raises(InputError, match="model 'c' has value inf"):
    face_jax.face_pool({'a': face_jax.face_score(x, y, vc_transform='neglog'), 'c': collapsed})
