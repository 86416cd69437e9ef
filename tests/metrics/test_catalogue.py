"""The metric catalogue as a whole: registration, shared passes, option routing, common input.

Per-family behaviour is tested in the test_<family>.py files beside this one.
"""

import dataclasses
import pathlib

import numpy as np
import pytest

import face_jax
from face_jax import dense
from face_jax import engine
from face_jax._src.errors import FaceJaxWarning
from tests.metrics import fixtures as fx

DOCS = pathlib.Path(__file__).resolve().parents[2] / 'docs'


def test_every_metric_is_registered_and_documented():
  for name, passes in [
      ('nc1', '1 pass'),
      ('vci', '1 pass'),
      ('logme', '1 pass'),
      ('leep', '2 passes'),
      ('nce', '1 pass'),
      ('hscore', '1 pass'),
      ('reg_hscore', '1 pass'),
      ('transrate', '1 pass'),
      ('gbc', '2 with'),
  ]:
    info = engine.get(name)
    assert passes in info.summary, (name, info.summary)
    assert info.citation and info.plan.__doc__
    assert info.higher_is_better == (name not in ('nc1', 'vci'))
  assert engine.get('leep').needs == {'source_probs'}
  assert engine.get('nce').needs == {'source_probs'}
  doc = (DOCS / 'baselines.md').read_text()
  for name in ('nc1', 'vci', 'logme', 'leep', 'nce', 'hscore', 'reg_hscore', 'transrate', 'gbc'):
    assert f'`{name}`' in doc, name
  for m in fx.MP_METRICS:
    info = engine.get(m)
    assert info.higher_is_better and info.citation and info.summary
    assert info.pool_relative == (m in ('ncti', 'etran'))
    assert (info.pool is not None) == (m in ('ncti', 'etran'))
  assert set(fx.MP_METRICS) <= set(face_jax.metric_names())
  assert engine.get('face').pool is face_jax.face_pool


def test_every_options_class_is_frozen_hashable_and_holds_the_defaults():
  for name in face_jax.metric_names():
    info = engine.get(name)
    assert dataclasses.is_dataclass(info.options), name
    assert info.options.__dataclass_params__.frozen, name
    default = info.options()  # every field has its default
    hash(default)
    assert default == info.options(**dataclasses.asdict(default))


def test_one_pass_metrics_share_one_pass_and_leep_adds_one():
  a, _ = fx.case('imbalanced_offset')
  x, y, p = a['X'], a['y'], a['probs']
  eng = face_jax.Engine(dtype='float64')
  out = face_jax.score(
      x,
      y,
      source_probs=p,
      metrics=fx.ONE_PASS + ('face',),
      engine=eng,
      metric_options={'face': {'weighting': 'balanced'}},
  )
  assert eng.passes_run == 1
  assert set(out) == set(fx.ONE_PASS) | {'face'}
  # The nc1 metric (docs/face.md's balanced default) is FaCe's NC1 at the same weighting.
  assert out['nc1'] == pytest.approx(out['face'].nc1, rel=1e-12)
  eng = face_jax.Engine(dtype='float64')
  out2 = face_jax.score(x, y, source_probs=p, metrics=fx.ONE_PASS + ('face', 'leep'), engine=eng)
  assert eng.passes_run == 2
  for m in fx.ONE_PASS:
    assert out2[m] == out[m]


def test_multi_pass_metrics_share_their_passes():
  for case in fx.CASES:
    assert fx.mp_scored(case, 'float64')[1] == max(fx.PASSES.values())  # 3: SFDA's
    assert fx.mp_scored(case, 'float32')[1] == 3


@pytest.mark.parametrize('dtype,rtol', [('float64', 1e-10), ('float32', 2e-5)])
def test_stream_equals_in_memory(dtype, rtol):
  a, _ = fx.case('imbalanced_offset')
  x, y, p = a['X'].astype(dtype), a['y'], a['probs'].astype(dtype)
  whole = face_jax.score(x, y, source_probs=p, metrics=fx.ALL)
  batches = [
      (x[i : i + 300], y[i : i + 300], {'source_probs': p[i : i + 300]})
      for i in range(0, len(y), 300)
  ]
  eng = face_jax.Engine(dtype=dtype)
  streamed = face_jax.score(batches, num_classes=20, metrics=fx.ALL, engine=eng, batch_size=128)
  # Unknown, unequal class counts: balanced NC1 needs its second pass, in lock step with LEEP's.
  assert eng.passes_run == 2
  for m in fx.ALL:
    assert streamed[m] == pytest.approx(whole[m], rel=rtol), m


def test_multi_pass_streaming_equals_in_memory():
  x, y, _ = fx.mp_case('imbalanced_offset')
  metrics = ('sfda', 'ncti', 'etran')  # (streamed subsamples: see test_subsample.py)
  whole, _, _ = fx.mp_scored('imbalanced_offset', 'float64')
  rng = np.random.default_rng(0)
  cuts = np.sort(rng.choice(np.arange(1, len(y)), 20, replace=False))
  batches = [(x[p], y[p]) for p in np.split(np.arange(len(y)), cuts)]  # uneven batches
  eng = face_jax.Engine(dtype='float64')
  got = face_jax.score(
      batches, num_classes=20, metrics=metrics, engine=eng, dtype='float64', batch_size=256
  )
  assert eng.passes_run == 3
  for m in metrics:
    np.testing.assert_allclose(fx.values(got[m]), fx.values(whole[m]), rtol=1e-9, err_msg=m)


def test_one_shot_iterator_runs_one_pass_metrics_and_refuses_leep():
  a, _ = fx.case('gauss_small')
  x, y, p = a['X'], a['y'], a['probs']
  gen = lambda: (
      (x[i : i + 100], y[i : i + 100], {'source_probs': p[i : i + 100]}) for i in range(0, 500, 100)
  )
  out = face_jax.score(gen(), num_classes=5, metrics=('hscore', 'nce', 'transrate'))
  assert out['hscore'] == pytest.approx(dense.hscore(x, y), rel=1e-6)
  with pytest.raises(face_jax.InputError, match='leep need.*another pass.*one-shot'):
    face_jax.score(gen(), num_classes=5, metrics=('leep',))


def test_empty_classes_are_left_out_with_a_warning():
  a, _ = fx.case('gauss_small')
  x, y, p = a['X'], a['y'], a['probs']
  base = face_jax.score(x, y, source_probs=p, metrics=fx.ALL)
  y2 = np.where(y >= 2, y + 1, y)  # class 2 empty, 6 classes declared
  with pytest.warns(face_jax.FaceJaxWarning, match='no sample'):
    out = face_jax.score(x, y2, source_probs=p, metrics=fx.ALL, num_classes=7)
  for m in fx.ALL:
    assert out[m] == pytest.approx(base[m], rel=1e-10), m


def test_empty_classes_are_left_out_of_the_multi_pass_metrics():
  x, y, _ = fx.mp_case('gauss_small')
  y4 = np.where(y == 4, 5, y)  # labels {0, 1, 2, 3, 5}: class 4 empty
  with pytest.warns(FaceJaxWarning, match='no sample'):
    got = face_jax.score(x, y4, metrics=('sfda', 'etran', 'ncti'))
  assert got['sfda'] == pytest.approx(dense.sfda(x, y), rel=fx.DENSE_RTOL)
  np.testing.assert_allclose(
      got['etran'].astuple(), dense.etran_components(x, y), rtol=fx.DENSE_RTOL
  )
  np.testing.assert_allclose(got['ncti'].astuple(), dense.ncti_components(x, y), rtol=fx.DENSE_RTOL)


def test_fewer_than_two_classes():
  a, _ = fx.case('gauss_small')
  for metric in ('logme', 'hscore', 'gbc', 'nce'):
    with pytest.raises(face_jax.InputError, match='at least 2 populated classes, got 1'):
      face_jax.score(a['X'], np.zeros(500, int), source_probs=a['probs'], metrics=(metric,))


# -- option routing ------------------------------------------------------------------


def test_options_by_name_dict_and_instance_agree():
  a, _ = fx.case('gauss_small')
  x, y = a['X'], a['y']
  by_name = face_jax.score(
      x, y, metrics=('nc1', 'gbc', 'face'), weighting='sample', gaussian_type='diagonal'
  )
  by_dict = face_jax.score(
      x,
      y,
      metrics=('nc1', 'gbc', 'face'),
      metric_options={
          'nc1': {'weighting': 'sample'},
          'gbc': {'gaussian_type': 'diagonal'},
          'face': {'weighting': 'sample'},
      },
  )
  by_instance = face_jax.score(
      x,
      y,
      metrics=('nc1', 'gbc', 'face'),
      metric_options={
          'nc1': face_jax.Nc1Options(weighting='sample'),
          'gbc': face_jax.GbcOptions('diagonal'),
          'face': face_jax.FaceOptions(weighting='sample'),
      },
  )
  for m in ('nc1', 'gbc'):
    assert by_name[m] == by_dict[m] == by_instance[m], m
  assert by_name['face'].score == by_dict['face'].score == by_instance['face'].score
  # A dict overrides the flat options it names; an instance is used as it is.
  out = face_jax.score(
      x,
      y,
      metrics=('nc1', 'face'),
      weighting='sample',
      metric_options={'face': face_jax.FaceOptions(weighting='balanced')},
  )
  assert out['face'].options.weighting == 'balanced' and out['nc1'] == by_name['nc1']


def test_option_routing_errors():
  a, _ = fx.case('gauss_small')
  x, y = a['X'], a['y']
  with pytest.raises(face_jax.InputError, match="option 'foo' is not accepted by any of"):
    face_jax.score(x, y, metrics=('nc1', 'vci'), foo=1)
  with pytest.raises(face_jax.InputError, match="vci has no option 'weighting'; valid: \\[\\]"):
    face_jax.score(x, y, metrics=('vci',), metric_options={'vci': {'weighting': 'sample'}})
  with pytest.raises(face_jax.InputError, match='not among metrics'):
    face_jax.score(x, y, metrics=('vci',), metric_options={'nc1': {}})
  with pytest.raises(face_jax.InputError, match="metric_options\\['nc1'\\] is a FaceOptions"):
    face_jax.score(x, y, metrics=('nc1',), metric_options={'nc1': face_jax.FaceOptions()})
