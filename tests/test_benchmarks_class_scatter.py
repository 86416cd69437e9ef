"""Smoke test of benchmarks/class_scatter.py (the --quick configuration)."""

import json

from benchmarks import class_scatter


def test_quick_run_writes_its_figures(tmp_path):
  out = tmp_path / 'cs.json'
  res = class_scatter.main(['--quick', '--out', str(out)])
  data = json.loads(out.read_text())
  assert data['schema'] == class_scatter.SCHEMA
  c = data['class_scatter_vs_moments']
  assert len(c['pass_s']['class_scatter']) == len(c['pass_s']['moments']) == 2
  assert c['ratio_min'] > 0 and c['ratio_paired_median'] > 0
  assert c['accumulator_mb'] == 2 * 20 * 128 * 128 * 4 / 2**20
  assert res['class_scatter_vs_moments']['n'] == 4000
