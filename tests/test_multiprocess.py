"""Two processes under jax.distributed (CPU, gloo): one mesh over both hosts' devices.

Each process feeds its own rows; the single end-of-pass psum merges the hosts.
Results must equal a single-process run on all the data.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

import face_jax
from face_jax import data, models
from tests import cases
from tests import processes

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_equal_one(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  pipe = data.get('digits', 'all', data_dir=data_dir, batch_size=64)  # prepare once, here
  port = str(_free_port())
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env['JAX_PLATFORMS'] = 'cpu'
  procs = [
      subprocess.Popen(
          [
              sys.executable,
              str(ROOT / 'tests' / 'multiprocess_worker.py'),
              str(i),
              port,
              str(tmp_path),
              data_dir,
          ],
          cwd=ROOT,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT,
          text=True,
      )
      for i in range(2)
  ]
  logs = processes.communicate_all(procs, timeout=600)
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-6000:]
  p0, p1 = (json.loads((tmp_path / f'p{i}.json').read_text()) for i in range(2))

  x, y = cases.make('imbalanced')
  x = x.astype(np.float32)
  ref = face_jax.face_score(x, y, batch_size=50, weighting='balanced')
  for key in ('arrays', 'streams'):
    assert p0[key] == p1[key]  # every process gets the same result
    score, nc1, n, passes = p0[key]
    assert n == len(y)
    np.testing.assert_allclose([score, nc1], [ref.score, ref.nc1], rtol=1e-5)
  assert p0['arrays'][3] == 1 and p0['streams'][3] == 2  # counts known / unknown up front
  with pytest.warns(face_jax.FaceJaxWarning, match='PCA to 32 dimensions'):  # D = 16
    parc = face_jax.score([(x, y)], num_classes=8, metrics=('parc',), subsample=200)['parc']
  assert p0['parc'] == p1['parc']
  assert p0['parc'][1:] == [200, len(y)]
  np.testing.assert_allclose(p0['parc'][0], parc.value, rtol=1e-4)  # the same 200 rows

  one = face_jax.score_model(models.get('cnn_tiny', image_size=16, seed=0), pipe)['pool']['face']
  assert p0['pipeline'][:3] == p1['pipeline'][:3]
  assert p0['pipeline'][2] == 1797 and p0['pipeline'][3] + p1['pipeline'][3] == 1797
  np.testing.assert_allclose(p0['pipeline'][:2], [one.score, one.nc1], rtol=1e-5)
