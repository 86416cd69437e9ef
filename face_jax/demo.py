"""Embedded offline demo data: scikit-learn's handwritten digits as several feature sets.

Synopsis::

    from face_jax import demo
    for name, (features, labels) in demo.digits_feature_sets().items():
      print(name, features.shape)

The 1797 8×8 digit images (real handwriting, shipped with scikit-learn) are
turned into "models" of different quality so a ranking has something to rank:

- ``pixels``: the 64 raw pixel intensities (0–16).
- ``pooled_2x2``: 2×2 average pooling (16 features): loses detail.
- ``gradients``: horizontal and vertical finite differences (112 features).
- ``random_relu``: a fixed random ReLU layer on the pixels (256 features).
- ``noisy_pixels``: pixels plus strong fixed Gaussian noise (64 features).
"""

from __future__ import annotations

import numpy as np


def digits_images() -> tuple[np.ndarray, np.ndarray]:
  """Returns (images float64 [1797, 8, 8] in 0..16, labels int64 [1797])."""
  from sklearn.datasets import load_digits  # local import: only the demo needs it

  d = load_digits()
  return d.images.astype(np.float64), d.target.astype(np.int64)


def digits_feature_sets(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Feature sets of the digits images, ``{name: (features [N, D] float32, labels [N])}``."""
  images, labels = digits_images()
  n = images.shape[0]
  pixels = images.reshape(n, 64)
  rng = np.random.default_rng(seed)
  pooled = images.reshape(n, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(n, 16)
  grads = np.concatenate(
      [np.diff(images, axis=1).reshape(n, -1), np.diff(images, axis=2).reshape(n, -1)], axis=1
  )
  w = rng.normal(0.0, 1.0 / 8.0, size=(64, 256))
  random_relu = np.maximum(pixels @ w, 0.0)
  noisy = pixels + rng.normal(0.0, 6.0, size=pixels.shape)
  sets = {
      'pixels': pixels,
      'pooled_2x2': pooled,
      'gradients': grads,
      'random_relu': random_relu,
      'noisy_pixels': noisy,
  }
  return {k: (v.astype(np.float32), labels) for k, v in sets.items()}
