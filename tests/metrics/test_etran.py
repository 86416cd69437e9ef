"""ETran (``metrics/etran.py``): fixtures, dense, the exact radix select, options."""

import math

import numpy as np
import pytest

import face_jax
from face_jax import dense
from face_jax._src.errors import InputError
from face_jax._src.metrics import etran as etran_lib
from tests.metrics import fixtures as fx


@pytest.mark.parametrize('case', fx.CASES)
def test_float64_in_memory_matches_reference_fixture(case):
  fx.check_mp_float64_matches_reference_fixture(case, 'etran')


@pytest.mark.parametrize('case', fx.CASES)
def test_float32_streamed_matches_dense_on_rounded_data(case):
  fx.check_mp_float32(case, 'etran')


def test_pass_count():
  fx.check_pass_count('etran')


def test_etran_exact_selection_needs_more_passes_in_float64():
  # Energies that agree in their first 32 key bits (relative gaps ~1e-13) and
  # exact ties: the radix select goes down to the last digit, still exact.
  rng = np.random.default_rng(0)
  n, d = 1000, 6
  y = np.arange(n) % 4
  x = np.tile(rng.normal(size=(1, d)), (n, 1)) + 1e-13 * rng.normal(size=(n, d))
  x[:, 0] += 1e-3 * y
  xt = np.repeat(rng.normal(size=(50, d)), 20, axis=0)  # every row 20 times
  for data in (x, xt):
    eng = face_jax.Engine(dtype='float64')
    r = face_jax.score(data, y, metrics=('etran',), engine=eng, batch_size=128)['etran']
    s_cls, s_en = dense.etran_components(data, y)
    assert r.s_en == s_en and r.k == 5 and r.n == n
    assert r.s_cls == pytest.approx(s_cls, rel=1e-12)
    assert eng.passes_run == 4  # 64-bit keys, 16 bits a pass
    eng = face_jax.Engine()
    r32 = face_jax.score(data.astype(np.float32), y, metrics=('etran',), engine=eng)['etran']
    assert eng.passes_run == 2  # 32-bit keys
    assert r32.s_en == pytest.approx(
        dense.etran_components(data.astype(np.float32), y)[1], rel=1e-6
    )


def test_sortable_key_round_trip_and_order():
  import jax.numpy as jnp

  vals = np.array([-np.inf, -3.5, -1e-30, -0.0, 0.0, 1e-30, 2.0, 7.25, np.inf], np.float32)
  keys = np.asarray(etran_lib.sortable_key(jnp.asarray(vals))).astype(np.uint64)
  assert np.all(np.diff(keys.astype(np.float64)) >= 0) and keys[0] < keys[-1]
  for v, k in zip(vals, keys):
    back = etran_lib.key_to_float(int(k), 'float32')
    assert back == v and math.copysign(1, back) == math.copysign(1, v)


def test_bad_options():
  x, y, _ = fx.mp_case('gauss_small')
  with pytest.raises(InputError, match='percent must be a number'):
    face_jax.score(x, y, metrics=('etran',), metric_options={'etran': {'percent': -1.0}})


def test_bad_data():
  x, y, _ = fx.mp_case('gauss_small')
  with pytest.raises(InputError, match='N >= 200'):
    face_jax.score(x[:150], y[:150], metrics=('etran',))
  bad = x.copy()
  bad[3, 2] = np.nan
  with pytest.raises(InputError, match='non-finite'):
    face_jax.score(bad, y, metrics=('etran',))


def test_too_few_samples_are_refused_before_any_pass():
  """With N known up front (arrays), ETran's N < 200 error comes before a pass is compiled."""
  from face_jax._src import api
  from face_jax._src import engine as engine_lib

  rng = np.random.default_rng(0)
  x = rng.standard_normal((150, 8)).astype(np.float32)
  y = np.arange(150) % 3
  before = engine_lib.TRACE_COUNTS['step']
  errors = api.start_errors(x, y, metrics=('etran', 'nc1'))
  assert list(errors) == ['etran'] and 'N >= 200' in str(errors['etran'])
  assert engine_lib.TRACE_COUNTS['step'] == before  # nothing was traced or run
  with pytest.raises(face_jax.InputError, match='N >= 200'):
    face_jax.score(x, y, metrics=('etran',))
