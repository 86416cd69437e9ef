"""float32 streaming stays accurate on large N with a large common feature mean."""

import numpy as np
import pytest

import face_jax
from tests.oracles import nc1_streaming_oracle

N, D, K, OFFSET, CHUNK = 2_000_000, 64, 10, 10_000.0, 100_000


def _chunks():
  means = np.random.default_rng(123).normal(0.0, 1.0, size=(K, D))
  scales = np.exp(np.random.default_rng(124).normal(0.0, 0.5, size=D))
  for i in range(N // CHUNK):
    rng = np.random.default_rng(1000 + i)
    y = rng.integers(0, K, CHUNK)
    x = means[y] + rng.normal(size=(CHUNK, D)) * scales + OFFSET
    yield x.astype(np.float32), y  # the engine and the oracle see the same float32 data


@pytest.mark.parametrize('weighting', ['balanced', 'sample'])
def test_large_n_large_offset_float32(weighting):
  res = face_jax.face_score(_chunks, num_classes=K, batch_size=16384, weighting=weighting)
  assert res.diagnostics['N'] == N
  ref = nc1_streaming_oracle(_chunks, K, weighting=weighting)
  assert abs(res.nc1 - ref) / ref < 1e-4, (res.nc1, ref)
