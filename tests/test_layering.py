"""Import layering: the main job needs only the installed package; no private engine names leak.

scripts/ imports nothing from ``benchmarks`` (not installed by setup.cfg), and scripts/ and
benchmarks/zoo/ use only public face_jax names (no ``face_jax._src``, no underscore names).
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / 'scripts').glob('*.py')) + sorted((ROOT / 'benchmarks' / 'zoo').glob('*.py'))


def _imports(path):
  """(module, name or None) of every import statement, at any depth."""
  out = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out += [(a.name, None) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      out += [(node.module, a.name) for a in node.names]
  return out


@pytest.mark.parametrize('path', FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_public_face_jax_names_only(path):
  for module, name in _imports(path):
    if module.split('.')[0] != 'face_jax':
      continue
    parts = module.split('.') + ([name] if name else [])
    assert not any(p.startswith('_') for p in parts), (path.name, module, name)
  assert '_src' not in path.read_text(), path.name


@pytest.mark.parametrize('path', sorted((ROOT / 'scripts').glob('*.py')),
                         ids=lambda p: p.name)
def test_scripts_do_not_import_benchmarks(path):
  for module, _ in _imports(path):
    assert module.split('.')[0] != 'benchmarks', (path.name, module)
