"""benchmarks/throughput.py and benchmarks/gpu_check.py run end to end (tiny) and write the documented JSON.

Only the schema is checked here, never the speed: speed targets are judged by
the benchmarks themselves, as ratios measured in one process.
"""

import json
import pathlib
import re
import subprocess
import sys

import pytest

from benchmarks import throughput as tp

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _check(rec, fields, where):
  assert isinstance(rec, dict), where
  missing = sorted(set(fields) - set(rec))
  assert not missing, f'{where}: missing {missing}'
  for name, typ in fields.items():
    types = typ if isinstance(typ, tuple) else (typ,)
    if float in types:
      types = types + (int,)  # JSON writes integral floats either way
    assert isinstance(rec[name], types) and not (
        isinstance(rec[name], bool) and bool not in types
    ), f'{where}.{name}: {rec[name]!r} is not {typ}'


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
  out = tmp_path_factory.mktemp('bench') / 'throughput.json'
  proc = subprocess.run(
      [sys.executable, str(ROOT / 'benchmarks' / 'throughput.py'), '--smoke', f'--out={out}'],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  return json.loads(out.read_text())


def test_throughput_smoke_schema(smoke):
  r = smoke
  _check(r, tp.TOP_FIELDS, 'top')
  assert r['schema'] == tp.SCHEMA and r['mode'] == 'smoke'
  assert r['sections'] == list(tp.SECTIONS)
  assert set(r['section_seconds']) == set(tp.SECTIONS)

  ((d, k, b),) = tp.SMOKE.step_grid
  assert len(r['step']) == 1
  s = r['step'][0]
  _check(s, tp.STEP_FIELDS, 'step[0]')
  assert (s['D'], s['K'], s['batch_size'], s['devices']) == (d, k, b, 1)
  assert s['samples_per_s'] > 0 and s['flops_per_s'] > 0
  assert s['flops_per_s'] == pytest.approx(2 * b * d * d * s['samples_per_s'] / b)
  assert s['ratio'] == pytest.approx(s['flops_per_s'] / s['matmul_flops_per_s'])
  assert s['matmul_flops_per_s'] == pytest.approx(
      max(s['numpy_matmul_flops_per_s'], s['jax_matmul_flops_per_s'])
  )
  assert s['peak_rss_mb'] > 0

  bd = r['breakdown'][0]
  _check(bd, tp.BREAKDOWN_FIELDS, 'breakdown[0]')
  for name in (
      'numpy_matmul',
      'jax_matmul',
      'step',
      'step_uncompensated',
      'from_batch',
      'health',
      'centre',
      'class_sums_segment_sum',
      'class_sums_one_hot',
      'two_sum_state',
      'from_batch_xla',
      'step_xla',
  ):
    _check(bd['parts'][name], tp.BREAKDOWN_PART_FIELDS, f'breakdown.parts.{name}')
  assert bd['parts']['step']['fraction_of_step'] == pytest.approx(1.0)

  assert [m['N'] for m in r['memory']] == list(tp.SMOKE.memory_n)
  for i, m in enumerate(r['memory']):
    _check(m, tp.MEMORY_FIELDS, f'memory[{i}]')
    assert m['passes'] == 1 and m['peak_rss_mb'] >= m['rss_sampled_peak_mb'] * 0.99

  assert r['finalise']
  for i, f in enumerate(r['finalise']):
    _check(f, tp.FINALISE_FIELDS, f'finalise[{i}]')
    assert f['finalise_s'] == pytest.approx(f['stat_finalize_s'] + f['plan_s'])
  assert any(f['metric'] == 'face' for f in r['finalise'])

  v = r['versus']
  _check(v, tp.VERSUS_FIELDS, 'versus')
  _check(v['stream'], tp.VERSUS_STREAM_FIELDS, 'versus.stream')
  _check(v['dense'], tp.VERSUS_DENSE_FIELDS, 'versus.dense')
  for m, rec in v['dense']['per_metric'].items():
    _check(rec, tp.VERSUS_DENSE_METRIC_FIELDS, f'versus.dense.per_metric.{m}')
  _check(v['summary'], tp.VERSUS_SUMMARY_FIELDS, 'versus.summary')
  assert 'face' in v['summary']['common_metrics']
  # Both sides computed FaCe of the same generated data: float32 streaming vs float64 in memory.
  assert v['summary']['value_rel_diff']['face'] < 1e-4

  dv = r['devices']
  _check(dv, tp.DEVICES_FIELDS, 'devices')
  assert [run['devices'] for run in dv['runs']] == [1, 8]
  for run in dv['runs']:
    _check(run, tp.DEVICES_RUN_FIELDS, 'devices.runs')
    for s in run['step']:
      _check(s, tp.STEP_FIELDS, 'devices.runs.step')
      assert s['devices'] == run['devices']
    for p in run['pass']:
      _check(p, tp.DEVICES_PASS_FIELDS, 'devices.runs.pass')
  for c in dv['comparison']:
    _check(c, tp.DEVICES_COMPARISON_FIELDS, 'devices.comparison')
  assert 'step_ratio_min_D_ge_512' not in r['summary']  # smoke D < 512: no target judged


def test_readme_documents_every_field():
  readme = (ROOT / 'benchmarks' / 'README.md').read_text()
  documented = set(re.findall(r'`([A-Za-z_][A-Za-z0-9_]*)`', readme))
  for table in (
      tp.TOP_FIELDS,
      tp.STEP_FIELDS,
      tp.BREAKDOWN_FIELDS,
      tp.BREAKDOWN_PART_FIELDS,
      tp.MEMORY_FIELDS,
      tp.FINALISE_FIELDS,
      tp.VERSUS_FIELDS,
      tp.VERSUS_STREAM_FIELDS,
      tp.VERSUS_DENSE_FIELDS,
      tp.VERSUS_DENSE_METRIC_FIELDS,
      tp.VERSUS_SUMMARY_FIELDS,
      tp.DEVICES_FIELDS,
      tp.DEVICES_RUN_FIELDS,
      tp.DEVICES_PASS_FIELDS,
      tp.DEVICES_COMPARISON_FIELDS,
  ):
    missing = sorted(set(table) - documented)
    assert not missing, f'benchmarks/README.md does not document {missing}'


def test_gpu_check_cpu_smoke(tmp_path):
  out = tmp_path / 'gpu.json'
  proc = subprocess.run(
      [
          sys.executable,
          str(ROOT / 'benchmarks' / 'gpu_check.py'),
          '--quick',
          '--cpu_smoke',
          f'--out={out}',
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  r = json.loads(out.read_text())
  assert r['schema'] == 'face_jax.benchmarks.gpu_check/1' and r['mode'] == 'cpu_smoke'
  (s,) = r['step']
  for f in (
      'D',
      'K',
      'batch_size',
      'samples_per_s',
      'flops_per_s',
      'matmul_highest_flops_per_s',
      'matmul_default_flops_per_s',
      'ratio_highest',
      'ratio_default',
  ):
    assert f in s, f
  assert s['ratio_highest'] == pytest.approx(s['flops_per_s'] / s['matmul_highest_flops_per_s'])
  assert r['pass']['samples_per_s'] > 0
  # The ResNet-50 part is a hook, recorded as not run (never faked).
  rn = r['resnet50']
  assert rn['status'] == 'ok' and rn['model'] == 'resnet_mini'  # cpu_smoke stand-in
  assert rn['forward_images_per_s'] > 0 and rn['forward_stats_images_per_s'] > 0


def test_gpu_check_refuses_cpu_without_smoke_flag(tmp_path):
  proc = subprocess.run(
      [
          sys.executable,
          str(ROOT / 'benchmarks' / 'gpu_check.py'),
          '--quick',
          f'--out={tmp_path / "g.json"}',
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      env={**__import__('os').environ, 'JAX_PLATFORMS': 'cpu'},
  )
  assert proc.returncode == 2 and 'no GPU' in proc.stderr
  assert not (tmp_path / 'g.json').exists()
