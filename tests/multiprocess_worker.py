"""One process of the 2-process test (tests/test_multiprocess.py); not collected by pytest.

Usage: python tests/multiprocess_worker.py PROCESS_ID PORT OUT_DIR DATA_DIR
"""

import json
import os
import sys

pid, port, out_dir, data_dir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

jax.config.update('jax_cpu_collectives_implementation', 'gloo')
jax.distributed.initialize(
    coordinator_address=f'localhost:{port}',
    num_processes=2,
    process_id=pid,
    initialization_timeout=120,
)

import numpy as np  # noqa: E402

import face_jax  # noqa: E402
from face_jax import data, models  # noqa: E402
from tests import cases  # noqa: E402

assert jax.process_count() == 2 and jax.device_count() == 4 and jax.local_device_count() == 2
out = {}
x, y = cases.make('imbalanced')
x = x.astype(np.float32)
# Arrays: an uneven split of the rows between the two processes.
cut = 500
rows = slice(0, cut) if pid == 0 else slice(cut, None)
r = face_jax.face_score(x[rows], y[rows], batch_size=50, weighting='balanced')
out['arrays'] = [r.score, r.nc1, r.diagnostics['N'], r.diagnostics['passes']]
# Streams: process 0 has 7 batches, process 1 has 3 (the shorter one is padded with masked steps).
idx = np.arange(len(y))
parts = np.array_split(idx[:cut], 7) if pid == 0 else np.array_split(idx[cut:], 3)
batches = [(x[p], y[p]) for p in parts]
r = face_jax.face_score(batches, num_classes=8, batch_size=128, weighting='balanced')
out['streams'] = [r.score, r.nc1, r.diagnostics['N'], r.diagnostics['passes']]
# A row subsample of a stream (count pass, then rows addressed by their global _index).
pr = face_jax.score(batches, num_classes=8, batch_size=128, metrics=('parc',), subsample=200)[
    'parc'
]
out['parc'] = [pr.value, pr.n_used, pr.n_total]
# A tfds pipeline: each process reads its own slice of digits.
pipe = data.get('digits', 'all', data_dir=data_dir, batch_size=64)
res = face_jax.score_model(models.get('cnn_tiny', image_size=16, seed=0), pipe)
rp = res['pool']['face']
out['pipeline'] = [rp.score, rp.nc1, rp.diagnostics['N'], pipe.num_local_examples]
with open(os.path.join(out_dir, f'p{pid}.json'), 'w') as f:
  json.dump(out, f)
jax.distributed.shutdown()
