"""Synthetic feature sets shared by the tests (deterministic)."""

import numpy as np


def gaussian_classes(n, d, k, *, seed=0, sep=1.0, offset=0.0, sizes=None, anisotropic=False):
  """Gaussian classes: x = μ_y + noise (+ offset). ``sizes`` fixes per-class counts."""
  rng = np.random.default_rng(seed)
  if sizes is None:
    y = rng.integers(0, k, size=n)
  else:
    y = np.repeat(np.arange(k), sizes)
    rng.shuffle(y)
  mu = rng.normal(0.0, sep, size=(k, d))
  z = rng.normal(size=(y.shape[0], d))
  if anisotropic:
    z *= np.exp(rng.normal(size=d))
  return mu[y] + z + offset, y


def geometric_sizes(k, n_max, n_min):
  return [int(round(n_max * (n_min / n_max) ** (c / (k - 1)))) for c in range(k)]


CASES = {
    'basic': dict(n=600, d=20, k=6, seed=1, sep=1.0),
    'n_lt_d': dict(n=60, d=100, k=4, seed=2, sep=1.0),
    'imbalanced': dict(
        n=None, d=16, k=8, seed=3, sep=0.7, sizes=geometric_sizes(8, 300, 7), anisotropic=True
    ),
    'many_classes': dict(n=3000, d=24, k=100, seed=4, sep=1.5),
    'offset': dict(n=800, d=12, k=5, seed=5, sep=0.5, offset=1000.0, anisotropic=True),
}


def make(name):
  kw = dict(CASES[name])
  return gaussian_classes(kw.pop('n'), kw.pop('d'), kw.pop('k'), **kw)
