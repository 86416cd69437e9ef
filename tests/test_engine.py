"""Engine properties: monoid laws, streaming invariance, single trace, passes, transfer guard."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import face_jax
from face_jax import engine
from face_jax._src import engine as engine_lib
from face_jax._src import stats as stats_lib
from tests import cases
from tests.oracles import face_oracle


def _batch(x, y, mask=None):
  mask = np.ones(len(y), bool) if mask is None else mask
  return stats_lib.Batch(jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32), jnp.asarray(mask))


def _moments_fixture(seed=0, n=64, d=8, k=3):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, d)).astype(np.float32)
  y = rng.integers(0, k, n)
  spec = stats_lib.MomentsSpec(num_classes=k, dim=d)
  params = {
      'shift': jnp.asarray(rng.normal(size=(k, d)), jnp.float32),
      'weight': jnp.asarray(rng.uniform(0.5, 2, size=k), jnp.float32),
  }
  return x, y, spec, params


def _assert_tree_close(a, b, rtol=1e-5, atol=1e-5):
  for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=rtol, atol=atol)


def test_moments_monoid_laws():
  x, y, spec, params = _moments_fixture()
  m = stats_lib.Moments
  parts = [
      m.from_batch(spec, params, _batch(x[i : i + 16], y[i : i + 16])) for i in range(0, 64, 16)
  ]
  whole = m.from_batch(spec, params, _batch(x, y))
  e = m.empty(spec)
  _assert_tree_close(parts[0].merge(e), parts[0], rtol=0, atol=0)  # identity
  left = parts[0].merge(parts[1]).merge(parts[2])
  right = parts[0].merge(parts[1].merge(parts[2]))
  _assert_tree_close(left, right)  # associativity
  _assert_tree_close(parts[0].merge(parts[1]), parts[1].merge(parts[0]))  # commutativity
  step = e
  for p in parts:
    step = step.merge(p)
  _assert_tree_close(step, whole)  # stepwise == whole
  with pytest.raises(ValueError, match='leaf shapes differ'):
    whole.merge(m.empty(stats_lib.MomentsSpec(num_classes=3, dim=4)))


def test_mask_removes_rows_exactly():
  x, y, spec, params = _moments_fixture()
  mask = np.arange(64) % 3 != 0
  masked = stats_lib.Moments.from_batch(spec, params, _batch(x, y, mask))
  kept = stats_lib.Moments.from_batch(spec, params, _batch(x[mask], y[mask]))
  _assert_tree_close(masked, kept)
  # Garbage in padded rows (even NaN) contributes nothing.
  xg = x.copy()
  xg[~mask] = np.nan
  _assert_tree_close(stats_lib.Moments.from_batch(spec, params, _batch(xg, y, mask)), kept)


def test_moments_finalize_matches_numpy():
  rng = np.random.default_rng(3)
  k, d = 4, 300  # several scatter blocks
  x, y = cases.gaussian_classes(500, d, k, seed=3, offset=50.0)
  spec = stats_lib.MomentsSpec(num_classes=k, dim=d, dtype='float64')
  assert spec.blocks == 2
  shift = rng.normal(size=(k, d)) + 50.0
  w = rng.uniform(0.5, 2.0, size=k)
  with jax.enable_x64(True):
    st = stats_lib.Moments.from_batch(
        spec,
        {'shift': jnp.asarray(shift), 'weight': jnp.asarray(w)},
        stats_lib.Batch(jnp.asarray(x), jnp.asarray(y, jnp.int32), jnp.ones(len(y), bool)),
    )
    fin = st.finalize(spec, {'shift': shift, 'weight': w})
  counts = np.bincount(y, minlength=k)
  mus = np.stack([x[y == c].mean(0) for c in range(k)])
  np.testing.assert_array_equal(fin.counts, counts)
  np.testing.assert_allclose(fin.means, mus, rtol=1e-12)
  np.testing.assert_allclose(
      fin.var_diag, np.stack([x[y == c].var(0) for c in range(k)]), rtol=1e-9
  )
  sw = sum(w[c] * (x[y == c] - mus[c]).T @ (x[y == c] - mus[c]) for c in range(k))
  np.testing.assert_allclose(fin.within_scatter, sw, rtol=1e-9, atol=1e-9)


def test_class_scatter_matches_numpy():
  x, y = cases.gaussian_classes(200, 6, 3, seed=7, offset=20.0)
  spec = stats_lib.ClassScatterSpec(num_classes=3, dim=6, dtype='float64')
  shift = np.full((3, 6), 20.0)
  req = engine.Request(stats_lib.ClassScatter, spec, {'shift': shift})
  eng = face_jax.Engine(dtype='float64')
  src = engine.ArraySource(x, y, batch_size=33, feat_dtype='float64')
  out = eng.run_pass(src, {'features': {'cs': req}})['features']['cs']
  for c in range(3):
    xc = x[y == c]
    np.testing.assert_allclose(out.scatter[c], (xc - xc.mean(0)).T @ (xc - xc.mean(0)), rtol=1e-10)
  g = x.mean(0)
  about = out.scatter_about(g)
  np.testing.assert_allclose(about[1], (x[y == 1] - g).T @ (x[y == 1] - g), rtol=1e-10)


SPEC_DEFAULTS = dict(weighting='balanced', vc_transform='neg', bc_cov='pooled', fairness='std')


@pytest.mark.parametrize('dtype', ['float32', 'float64'])
@pytest.mark.parametrize('opts', [{}, SPEC_DEFAULTS], ids=['defaults', 'spec_defaults'])
def test_streaming_invariance(dtype, opts):
  x, y = cases.make('imbalanced')
  x = x.astype(dtype)
  whole = face_jax.face_score(x, y, **opts)
  b37 = face_jax.face_score(x, y, batch_size=37, **opts)  # padded last batch
  assert len(y) % 37 != 0
  batches = [(x[i : i + 50], y[i : i + 50]) for i in range(0, len(y), 50)]
  it = face_jax.face_score(batches, num_classes=8, **opts)  # balanced: 2 passes
  gen = face_jax.face_score(lambda: iter(batches), num_classes=8, batch_size=64, **opts)
  for r in (b37, it, gen):
    for f in ('score', 'variance_collapse', 'class_fairness', 'nc1', 'mean_overlap'):
      np.testing.assert_allclose(getattr(r, f), getattr(whole, f), rtol=1e-6)
    # Tiny overlaps exp(-D_B) carry a relative error of D_B·(error of D_B): compare
    # them to 1e-6 of the largest overlap.
    np.testing.assert_allclose(r.overlap, whole.overlap, rtol=1e-6, atol=1e-6 * whole.overlap.max())
    np.testing.assert_array_equal(r.class_counts, whole.class_counts)


def test_dict_batches_with_mask_and_uneven_sizes():
  x, y = cases.make('basic')
  ref = face_jax.face_score(x, y)
  rng = np.random.default_rng(0)
  cuts = np.sort(rng.choice(np.arange(1, len(y)), 9, replace=False))
  batches = []
  for part in np.split(np.arange(len(y)), cuts):
    pad = 5
    f = np.concatenate([x[part], np.full((pad, x.shape[1]), np.nan)])
    l = np.concatenate([y[part], np.full(pad, -1)])
    m = np.concatenate([np.ones(len(part), bool), np.zeros(pad, bool)])
    batches.append({'features': f, 'labels': l, '_mask': m})
  r = face_jax.face_score(batches, num_classes=6, batch_size=40)  # big batches get split
  np.testing.assert_allclose(r.score, ref.score, rtol=1e-9)


def test_single_trace_over_a_stream():
  x, y = cases.gaussian_classes(1000, 24, 5, seed=11)
  eng = face_jax.Engine()
  spec = stats_lib.MomentsSpec(num_classes=5, dim=24)
  req = engine.Request(stats_lib.Moments, spec, stats_lib.Moments.default_params(spec))
  before = engine_lib.TRACE_COUNTS['step']
  src = engine.ArraySource(x, y, batch_size=64)  # 16 steps, the last padded
  assert src.num_batches == 16
  eng.run_pass(src, {'features': {'m': req}})
  assert engine_lib.TRACE_COUNTS['step'] - before == 1
  # A new pass with other params (a new shift) reuses the compiled step.
  req2 = engine.Request(stats_lib.Moments, spec, {'shift': np.ones((5, 24)), 'weight': np.ones(5)})
  eng.run_pass(src, {'features': {'m': req2}})
  assert engine_lib.TRACE_COUNTS['step'] - before == 1


def test_state_is_donated():
  x, y = cases.gaussian_classes(100, 8, 3, seed=1)
  eng = face_jax.Engine()
  spec = stats_lib.MomentsSpec(num_classes=3, dim=8)
  layout = (('features', 3, ((stats_lib.Moments, spec),)),)
  step = eng.build_step(layout)
  states = eng.init_states(layout)
  params = eng.replicate(
      {
          'features': (
              {
                  k: np.asarray(v, np.float32)
                  for k, v in stats_lib.Moments.default_params(spec).items()
              },
          )
      }
  )
  src = engine.ArraySource(x, y)
  raw, _ = next(iter(src))
  old = states['features'][0][0].scatter
  states, _ = step(states, eng.to_global(raw), params, None)
  assert old.is_deleted()


def test_transfer_guard_disallow():
  x, y = cases.make('basic')
  with jax.transfer_guard('disallow'):
    r = face_jax.face_score(x.astype(np.float32), y, batch_size=100)
  assert np.isfinite(r.score)


def test_compensated_accumulation_beats_plain_float32():
  # 400 batches of values ~1 with a tiny per-class drift: plain float32 sums lose digits.
  rng = np.random.default_rng(0)
  n, d, k = 400 * 256, 4, 2
  x = (1.0 + 1e-3 * rng.normal(size=(n, d))).astype(np.float32)
  y = rng.integers(0, k, n)
  spec = stats_lib.MomentsSpec(num_classes=k, dim=d)
  zero = {'shift': np.zeros((k, d)), 'weight': np.ones(k)}  # no shift: stress the sums
  req = engine.Request(stats_lib.Moments, spec, zero)
  src = engine.ArraySource(x, y, batch_size=256)
  comp = face_jax.Engine(compensated=True).run_pass(src, {'features': {'m': req}})['features']['m']
  plain = face_jax.Engine(compensated=False).run_pass(src, {'features': {'m': req}})['features'][
      'm'
  ]
  xd = x.astype(np.float64)
  true = np.stack([xd[y == c].sum(0) for c in range(k)])
  err_c = np.abs(comp.sums - true).max() / np.abs(true).max()
  err_p = np.abs(plain.sums - true).max() / np.abs(true).max()
  assert err_c < 1e-7 and err_c < err_p / 10, (err_c, err_p)


def test_one_pass_for_equal_counts_two_for_unequal_streams():
  x, y = cases.make('imbalanced')
  batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(y), 64)]
  eng = face_jax.Engine(dtype='float64')
  bal = dict(weighting='balanced')
  r = face_jax.face_score(batches, num_classes=8, engine=eng, dtype='float64', **bal)
  assert eng.passes_run == 2 and r.diagnostics['passes'] == 2
  np.testing.assert_allclose(r.score, face_oracle(x, y, **bal)['score'], rtol=1e-9)
  eng = face_jax.Engine(dtype='float64')
  face_jax.face_score(x, y, engine=eng, **bal)  # counts known up front
  assert eng.passes_run == 1
  eng = face_jax.Engine(dtype='float64')
  face_jax.face_score(batches, num_classes=8, engine=eng, dtype='float64', weighting='sample')
  assert eng.passes_run == 1
  yb = np.repeat(np.arange(4), 25)
  xb = np.random.default_rng(0).normal(size=(100, 5)) + yb[:, None]
  eng = face_jax.Engine(dtype='float64')
  face_jax.face_score(
      [(xb[:50], yb[:50]), (xb[50:], yb[50:])], num_classes=4, engine=eng, **bal, dtype='float64'
  )
  assert eng.passes_run == 1  # balanced == sample for equal counts


def test_progress_callback():
  x, y = cases.make('basic')
  seen = []
  face_jax.face_score(x, y, batch_size=50, progress=seen.append)
  assert seen[-1].done and seen[-1].examples == len(y) and seen[-1].steps == 12
