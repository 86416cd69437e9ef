"""8 fake CPU devices: the streamed baselines (group A) equal the dense float64 oracles."""

import pathlib

import jax
import numpy as np
import pytest

import face_jax
from face_jax import dense

assert jax.device_count() == 8, f'expected 8 fake CPU devices, got {jax.devices()}'

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / 'fixtures' / 'reference'
ORACLES = {
    'logme': lambda X, y, P: dense.logme(X, y),
    'leep': lambda X, y, P: dense.leep(P, y),
    'nce': lambda X, y, P: dense.nce(P, y),
    'hscore': lambda X, y, P: dense.hscore(X, y),
    'reg_hscore': lambda X, y, P: dense.reg_hscore(X, y),
    'transrate': lambda X, y, P: dense.transrate(X, y),
    'gbc': lambda X, y, P: dense.gbc(X, y),
    'vci': lambda X, y, P: dense.vci(X, y),
}


@pytest.mark.parametrize('case', ['gauss_small', 'imbalanced_offset'])
def test_eight_devices_match_dense(case):
  with np.load(FIXTURES / 'cases' / f'{case}.npz') as d:
    x, y, p = d['X'], d['y'], d['probs']
  eng = face_jax.Engine(dtype='float64')
  assert eng.num_devices == 8
  out = face_jax.score(x, y, source_probs=p, metrics=tuple(ORACLES), batch_size=61, engine=eng)
  for m, f in ORACLES.items():
    assert out[m] == pytest.approx(f(x, y, p), rel=1e-9), m
  pca = face_jax.score(x, y, metrics=('gbc',), pca_dim=16, batch_size=61, engine=eng)['gbc']
  assert pca == pytest.approx(dense.gbc(x, y, pca_dim=16), rel=1e-5)
