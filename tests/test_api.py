"""Public API: every exported name exists and is documented; docstring examples run."""

import doctest
import pathlib

import face_jax
from face_jax._src import api

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_all_names_exist_and_have_docstrings():
  assert len(set(face_jax.__all__)) == len(face_jax.__all__)
  for name in face_jax.__all__:
    obj = getattr(face_jax, name)
    assert (obj.__doc__ or '').strip(), f'{name} has no docstring'


def test_readme_and_docs_mention_the_public_entry_points():
  text = (ROOT / 'README.md').read_text() + (ROOT / 'docs' / 'face.md').read_text()
  for name in (
      'face_score',
      'score',
      'face_pool',
      'FaceJaxWarning',
      'InputError',
      'Moments',
      'ClassScatter',
      'FaCeResult',
  ):
    assert name in text, name


def test_readme_starts_with_the_two_commands():
  lines = (ROOT / 'README.md').read_text().splitlines()
  block = lines[lines.index('```bash') + 1 : lines.index('```')]
  assert block == [
      'bash scripts/setup_env.sh && .venv/bin/python scripts/score.py',
      'bash scripts/test.sh',
  ]
  ci = (ROOT / '.ci' / 'run').read_text()
  assert 'bash scripts/test.sh' in ci


def test_docstring_examples():
  failures, tried = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
  assert tried > 0 and failures == 0


def test_metric_registry_lists_face():
  assert 'face' in face_jax.metric_names()
