"""benchmarks/model_throughput.py runs and writes its documented schema (speed is not tested)."""

import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIELDS = {
    'model',
    'image_size',
    'channels',
    'feature_dim',
    'num_classes',
    'batch_size',
    'num_examples',
    'pipeline_images_per_s',
    'forward_images_per_s',
    'forward_stats_images_per_s',
    'stats_overhead',
    'end_to_end_images_per_s',
    'pipeline_keeps_up',
    'repeats',
}


def test_smoke_schema(tmp_path):
  out = tmp_path / 'mt.json'
  proc = subprocess.run(
      [
          sys.executable,
          str(ROOT / 'benchmarks' / 'model_throughput.py'),
          '--smoke',
          '--out',
          str(out),
      ],
      capture_output=True,
      text=True,
      timeout=600,
      cwd=ROOT,
  )
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  res = json.loads(out.read_text())
  assert res['smoke'] and res['machine']['cpu_count'] >= 1
  (m,) = res['models']
  assert set(m) == FIELDS
  assert m['num_examples'] == 256 and m['feature_dim'] > 0
  for k in (
      'pipeline_images_per_s',
      'forward_images_per_s',
      'forward_stats_images_per_s',
      'end_to_end_images_per_s',
  ):
    assert m[k] > 0
