"""The architecture, checked by tools: import rules (import-linter), public names only, layout.

The import contracts live in pyproject.toml (``[tool.importlinter]``): face_jax._src imports
nothing above it (no public module, no ``face_jax.dense`` oracle, no scripts or benchmarks);
the package never imports scripts or benchmarks; scripts never import benchmarks; private
modules are used only inside their package; no import cycles between a package's modules.
"""

import ast
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _lint_imports():
  exe = shutil.which('lint-imports', path=str(pathlib.Path(sys.executable).parent))
  assert exe, 'import-linter is a test dependency (setup.cfg [test])'
  return exe


def test_import_contracts_hold():
  proc = subprocess.run(
      [_lint_imports(), str(ROOT / 'pyproject.toml')],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
  assert 'BROKEN' not in proc.stdout and 'KEPT' in proc.stdout


def test_a_broken_rule_is_reported(tmp_path):
  """The contracts can fail: a private-module import from scripts is caught."""
  text = (ROOT / 'pyproject.toml').read_text()
  (tmp_path / 'pyproject.toml').write_text(text)
  probe = ROOT / 'scripts' / '_probe_private_import.py'
  probe.write_text('from face_jax._src import stats\n')
  try:
    proc = subprocess.run(
        [_lint_imports(), str(tmp_path / 'pyproject.toml')],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
  finally:
    probe.unlink()
  assert proc.returncode != 0 and 'BROKEN' in proc.stdout


def _imports(path):
  """(module, name or None) of every import statement, at any depth."""
  out = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      out += [(a.name, None) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      out += [(node.module, a.name) for a in node.names]
  return out


OUTSIDE = sorted(list((ROOT / 'scripts').glob('*.py')) + list((ROOT / 'benchmarks').rglob('*.py')))
PUBLIC = sorted(p for p in (ROOT / 'face_jax').rglob('*.py') if '_src' not in p.parts)


@pytest.mark.parametrize('path', OUTSIDE, ids=lambda p: str(p.relative_to(ROOT)))
def test_scripts_and_benchmarks_use_public_names_only(path):
  for module, name in _imports(path):
    if module.split('.')[0] != 'face_jax':
      continue
    parts = module.split('.') + ([name] if name else [])
    assert not any(p.startswith('_') for p in parts), (module, name)
  assert '_src' not in path.read_text()


@pytest.mark.parametrize('path', PUBLIC, ids=lambda p: str(p.relative_to(ROOT)))
def test_public_modules_import_no_private_name_from_the_core(path):
  for module, name in _imports(path):
    if module.startswith('face_jax._src') and name is not None:
      assert not name.startswith('_'), (module, name)


def test_no_module_named_after_a_build_group():
  names = [
      p.stem for p in list((ROOT / 'face_jax').rglob('*.py')) + list((ROOT / 'tests').rglob('*.py'))
  ]
  bad = [n for n in names if n.endswith(('_a', '_b', '_a_8dev', '_b_8dev')) or 'group' in n]
  assert not bad, bad
