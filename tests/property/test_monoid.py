"""``merge`` is a commutative monoid with ``empty`` as identity (``Moments.from_batch`` on jnp).

Floating-point addition is commutative but not associative, so the laws are
checked two ways: on a dyadic grid (features, shifts and square-root weights on
multiples of 1/4, small enough that every sum and product is exact in float32)
every law holds bit for bit in both dtypes; on Gaussian data associativity holds
to rounding (float64 ``1e-12``, float32 ``1e-5`` as tests/test_engine.py).
Commutativity and the identity are exact on any data.
"""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from face_jax import engine
from tests.property import strategies as pst

# One compilation per spec: every part is the whole batch with a row mask (padding
# rows add exact zeros), so the parts share one shape.
_from_batch = jax.jit(engine.Moments.from_batch, static_argnums=0)


def _batch(x, y, dtype, mask):
  return engine.Batch(jnp.asarray(x, dtype), jnp.asarray(y, jnp.int32), jnp.asarray(mask))


def _leaves(stat):
  return [np.asarray(a) for a in jax.tree.leaves(stat)]


def _assert_equal(a, b):
  for u, v in zip(_leaves(a), _leaves(b)):
    np.testing.assert_array_equal(u, v)


def _assert_close(a, b, rtol):
  for u, v in zip(_leaves(a), _leaves(b)):
    pst.assert_close(u, v, rtol)


@given(
    shape=st.sampled_from(pst.SHAPES),
    dtype=st.sampled_from(pst.DTYPES),
    grid=st.booleans(),
    cuts=st.lists(st.integers(1, 47), min_size=2, max_size=3, unique=True),
    seed=st.integers(0, 2**31 - 1),
)
def test_merge_is_a_commutative_monoid(shape, dtype, grid, cuts, seed):
  d, k = shape
  rng = np.random.default_rng(seed)
  n = 48
  y = rng.integers(0, k, n)
  if grid:
    x = rng.integers(-32, 33, size=(n, d)) / 4.0
    shift = rng.integers(-16, 17, size=(k, d)) / 4.0
    weight = rng.choice([0.25, 1.0, 4.0], size=k)  # square roots 0.5, 1, 2
  else:
    x = rng.normal(size=(n, d)) * 3.0 + 10.0
    shift = rng.normal(size=(k, d)) + 10.0
    weight = rng.uniform(0.5, 2.0, size=k)
  spec = engine.MomentsSpec(num_classes=k, dim=d, dtype=dtype)
  with jax.enable_x64(dtype == 'float64'):
    params = {'shift': jnp.asarray(shift, dtype), 'weight': jnp.asarray(weight, dtype)}
    bounds = [0, *sorted(cuts), n]
    rows = np.arange(n)
    a, b, c, *rest = [
        _from_batch(spec, params, _batch(x, y, dtype, (rows >= i) & (rows < j)))
        for i, j in zip(bounds[:-1], bounds[1:])
    ]
    whole = _from_batch(spec, params, _batch(x, y, dtype, rows >= 0))
    e = engine.Moments.empty(spec)
    for leaf in jax.tree.leaves(e):
      assert leaf.dtype == jnp.dtype(dtype) and not leaf.weak_type and not np.any(leaf)
    # Identity and commutativity: exact on any data.
    _assert_equal(a.merge(e), a)
    _assert_equal(e.merge(a), a)
    _assert_equal(a.merge(b), b.merge(a))
    # Associativity, and the merged parts against the whole batch.
    left = a.merge(b).merge(c)
    right = a.merge(b.merge(c))
    swapped = c.merge(a).merge(b)
    merged = left
    for r in rest:
      merged = merged.merge(r)
    if grid:
      _assert_equal(left, right)
      _assert_equal(left, swapped)
      _assert_equal(merged, whole)
    else:
      rtol = 1e-12 if dtype == 'float64' else 1e-5
      _assert_close(left, right, rtol)
      _assert_close(left, swapped, rtol)
      _assert_close(merged, whole, rtol)
