"""benchmarks/batch_job.py --quick runs and writes its documented schema (speed is not tested)."""

import json

from benchmarks import batch_job


def test_quick_schema_and_equal_scores(tmp_path):
  out = tmp_path / 'bj.json'
  batch_job.main(['--quick', '--out', str(out)])
  res = json.loads(out.read_text())
  assert res['quick'] and res['models'] == 2 and res['images'] == 256
  # One read serves both models: half the passes over the data, the same scores.
  assert res['data_passes'] == {'per_model': 2, 'one_read': 1}
  assert res['max_relative_difference'] <= 1e-5
  assert len(res['per_model_seconds']) == len(res['one_read_seconds']) == res['repeats'] == 1
  assert res['speedup'] > 0 and res['read_images_per_s'] > 0
