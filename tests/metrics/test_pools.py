"""Pool-relative scores: ``pool_minmax`` and the NCTI / ETran pools (and their dense copies)."""

import numpy as np
import pytest

import face_jax
from face_jax import engine
from face_jax import dense
from face_jax._src.errors import InputError
from tests.metrics import fixtures as fx


def test_ncti_and_etran_pools_from_results():
  x, y, _ = fx.mp_case('gauss_small')
  rng = np.random.default_rng(1)
  models = {'raw': x, 'noisy': x + rng.normal(size=x.shape), 'scaled': 0.5 * x[:, ::-1]}
  res = {m: face_jax.score(v, y, metrics=('ncti', 'etran')) for m, v in models.items()}
  ncti = {m: r['ncti'] for m, r in res.items()}
  etran = {m: r['etran'] for m, r in res.items()}

  def norm(vals):
    a = np.array(list(vals.values()))
    return dict(zip(vals, (a - a.min()) / (a.max() - a.min())))

  seli = norm({m: c.s_seli for m, c in ncti.items()})
  ncc = norm({m: c.s_ncc for m, c in ncti.items()})
  vc = norm({m: c.vc for m, c in ncti.items()})
  want = {m: ncc[m] + seli[m] - vc[m] for m in models}
  assert face_jax.ncti_pool(ncti) == pytest.approx(want, abs=1e-12)
  assert engine.get('ncti').pool(ncti) == pytest.approx(want, abs=1e-12)
  tuples = {m: c.astuple() for m, c in ncti.items()}
  assert dense.ncti_pool(tuples) == pytest.approx(want, abs=1e-12)
  en = norm({m: c.s_en for m, c in etran.items()})
  cls = norm({m: c.s_cls for m, c in etran.items()})
  want = {m: 0.15 * en[m] + 0.85 * cls[m] for m in models}
  assert face_jax.etran_pool(etran) == pytest.approx(want, abs=1e-12)
  assert engine.get('etran').pool(etran) == pytest.approx(want, abs=1e-12)
  assert dense.etran_pool({m: c.components() for m, c in etran.items()}) == pytest.approx(
      want, abs=1e-12
  )
  assert (
      dense.pool_minmax({'a': {'u': 1.0}, 'b': {'u': 3.0}}, {'u': 2.0})
      == face_jax.pool_minmax({'a': {'u': 1.0}, 'b': {'u': 3.0}}, {'u': 2.0})
      == {'a': 0.0, 'b': 2.0}
  )


def test_pool_errors():
  with pytest.raises(InputError, match='expected 3'):
    face_jax.ncti_pool({'m': (1.0, 2.0)})
  with pytest.raises(InputError, match="'m2'.*not finite"):
    face_jax.etran_pool({'m1': (0.5, 1.0), 'm2': (0.4, float('nan'))})
  with pytest.raises(InputError, match='no component weights'):
    face_jax.pool_minmax({'m': {'u': 1.0}}, {})
  with pytest.raises(InputError, match='not finite'):
    face_jax.pool_minmax({'m': {'u': 1.0}}, {'u': float('inf')})
