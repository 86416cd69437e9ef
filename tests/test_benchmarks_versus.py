"""benchmarks/versus_reference.py --quick runs without the authors' code and writes its JSON.

CI has no checkout of the references: every reference is then recorded as
``not available: <why>`` and only the face_jax side runs.  The face_jax values
are checked against the in-memory float64 oracles (``face_jax.dense``) on the
same generated data; never the speed.
"""

import json
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import versus_reference as vr
from face_jax import dense

ROOT = pathlib.Path(__file__).resolve().parents[1]
F32_RTOL = 1e-4  # float32 streaming vs float64 in memory


@pytest.fixture(scope='module')
def quick(tmp_path_factory):
  tmp = tmp_path_factory.mktemp('versus')
  refs = tmp / 'refs'
  refs.mkdir()  # empty: no reference is available
  out = tmp / 'versus.json'
  proc = subprocess.run(
      [
          sys.executable,
          str(ROOT / 'benchmarks' / 'versus_reference.py'),
          '--quick',
          f'--references_dir={refs}',
          f'--out={out}',
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  return json.loads(out.read_text()), out


def _oracle(metric, x, y, p):
  if metric in vr.SOURCE_METRICS:
    return getattr(dense, metric)(p, y)
  if metric == 'ncti':
    return dict(zip(vr.NCTI_COMPONENTS, dense.ncti_components(x, y)))
  return getattr(dense, metric)(x, y)


def _close(got, want, where):
  if isinstance(want, dict):
    assert set(got) == set(want), where
    for c in want:
      assert got[c] == pytest.approx(want[c], rel=F32_RTOL), f'{where}.{c}'
  else:
    assert got == pytest.approx(want, rel=F32_RTOL), where


def test_quick_schema(quick):
  r, _ = quick
  assert r['schema'] == vr.SCHEMA and r['mode'] == 'quick'
  for key in (
      'command',
      'created',
      'host',
      'timing',
      'data',
      'references',
      'per_metric',
      'all_eight',
      'total_seconds',
  ):
    assert key in r, key
  d = r['data']
  assert (d['N'], d['D'], d['K'], d['Ks'], d['rounds']) == (
      vr.QUICK.n,
      vr.QUICK.dim,
      vr.QUICK.num_classes,
      vr.QUICK.source_classes,
      vr.QUICK.rounds,
  )
  assert set(r['references']) == set(vr.REFERENCES)
  for name, ref in r['references'].items():
    assert ref['status'].startswith('not available: '), name
    assert ref['pinned_commit'] == vr.REFERENCES[name]['commit'] and ref['commit'] is None
  assert list(r['per_metric']) == list(vr.METRICS)
  for m, rec in r['per_metric'].items():
    ref, fj = rec['reference'], rec['face_jax']
    assert ref['status'].startswith('not available: '), m
    assert ref['call'] == vr.REFERENCE_CALLS[m][1] and ref['times_s'] == []
    assert ref['time_s'] is None and ref['value'] is None
    assert rec['time_ratio_reference_over_face_jax'] is None and rec['rel_diff'] is None
    assert len(fj['times_s']) == len(fj['compile_s']) == vr.QUICK.rounds
    assert fj['time_s'] == min(fj['times_s']) > 0 and min(fj['compile_s']) > 0
    assert fj['peak_rss_over_start_mb'] >= 0 and fj['rss_before_mb'] > 0
    assert m in fj['call']
  nc = r['per_metric']['ncti']
  assert nc['reference_exact_pca']['status'].startswith('not available: ')
  assert nc['rel_diff_exact_pca'] is None and nc['reference_pca_solver'] is None
  a = r['all_eight']
  assert set(a['face_jax']['values']) == set(vr.METRICS)
  assert a['face_jax']['time_s'] > 0 and len(a['face_jax']['compile_s']) == vr.QUICK.rounds
  assert a['reference_sum_s'] is None and a['time_ratio_reference_sum_over_face_jax'] is None
  assert a['face_jax_single_metric_sum_s'] == pytest.approx(
      sum(r['per_metric'][m]['face_jax']['time_s'] for m in vr.METRICS)
  )


def test_quick_values_match_dense_oracles(quick):
  r, _ = quick
  x, y, p = vr.make_data(vr.QUICK)
  assert x.dtype == np.float32 and p.dtype == np.float32 and y.dtype == np.int64
  for m in vr.METRICS:
    want = _oracle(m, x, y, p)
    _close(r['per_metric'][m]['face_jax']['value'], want, f'{m} (alone)')
    _close(r['all_eight']['face_jax']['values'][m], want, f'{m} (all eight)')


def test_quick_markdown(quick):
  r, out = quick
  md = out.with_suffix('.md').read_text()
  assert md == vr.markdown(r)
  assert md.count('not available') >= len(vr.REFERENCES) + len(vr.METRICS)
  for m in vr.METRICS:
    assert re.search(rf'^\| {m} \|', md, re.M), m


def test_data_is_seeded_and_written_as_generated(tmp_path):
  cfg = vr.QUICK
  paths = vr.write_data(cfg, str(tmp_path))
  x, y, p = vr.make_data(cfg)
  np.testing.assert_array_equal(np.load(paths['features']), x)
  np.testing.assert_array_equal(np.load(paths['labels']), y)
  np.testing.assert_array_equal(np.load(paths['source_probs']), p)
  assert set(np.unique(y)) == set(range(cfg.num_classes))
  np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_reference_commit_sources(tmp_path):
  (tmp_path / 'SFDA').mkdir()
  (tmp_path / 'SFDA' / 'COMMIT').write_text(vr.REFERENCES['SFDA']['commit'] + '\n')
  (tmp_path / 'NCTI').mkdir()
  (tmp_path / 'NCTI' / 'metrics.py').write_text('')
  info = vr.reference_info(str(tmp_path), {'NCTI': 'abc123'})
  assert info['SFDA']['status'] == 'ok' and info['SFDA']['matches_pinned'] is True
  assert info['SFDA']['commit_source'] == 'COMMIT file'
  assert info['NCTI']['commit'] == 'abc123' and info['NCTI']['matches_pinned'] is False
  assert info['NCTI']['commit_source'] == '--reference_commits'
  assert info['LogME']['status'].startswith('not available: ')


def test_readme_documents_every_field(quick):
  r, _ = quick
  readme = (ROOT / 'benchmarks' / 'README.md').read_text()
  documented = set(re.findall(r'`([A-Za-z_][A-Za-z0-9_]*)`', readme))
  fields = set(r) | set(r['data']) | set(r['all_eight']) | set(r['all_eight']['face_jax'])
  for ref in r['references'].values():
    fields |= set(ref)
  for rec in r['per_metric'].values():
    fields |= set(rec) | set(rec['reference']) | set(rec['face_jax'])
  missing = sorted(fields - documented)
  assert not missing, f'benchmarks/README.md does not document {missing}'
