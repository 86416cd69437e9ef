"""Formatting and lint, checked by the tools configured in pyproject.toml (pyink, ruff)."""

import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
PATHS = ('face_jax', 'benchmarks', 'scripts', 'tests')


def _tool(name):
  exe = shutil.which(name, path=str(pathlib.Path(sys.executable).parent))
  assert exe, f'{name} is a test dependency (setup.cfg [test])'
  return exe


def test_code_is_formatted_with_pyink():
  proc = subprocess.run(
      [_tool('pyink'), '--check', *PATHS],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:] + (
      '\nrun: pyink face_jax benchmarks scripts tests'
  )


def test_ruff_lint_passes():
  proc = subprocess.run(
      [_tool('ruff'), 'check', *PATHS],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
