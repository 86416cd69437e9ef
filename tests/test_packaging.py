"""The built wheel: complete (the CPU kernels' C++ source included) and built without warnings."""

import glob
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_wheel_carries_the_kernel_source_and_builds_without_warnings(tmp_path):
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'pip',
          'wheel',
          ROOT,
          '--no-deps',
          '--no-build-isolation',
          '-w',
          str(tmp_path),
      ],
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert proc.returncode == 0, proc.stdout + proc.stderr
  log = proc.stdout + proc.stderr
  assert 'would be ignored' not in log, log
  assert 'Warning' not in log, log
  (wheel,) = glob.glob(str(tmp_path / 'face_jax-*.whl'))
  names = set(zipfile.ZipFile(wheel).namelist())
  sources = glob.glob(os.path.join(ROOT, 'face_jax', '_src', 'csrc', '*.cc'))
  assert sources
  for path in sources:
    assert os.path.relpath(path, ROOT).replace(os.sep, '/') in names
  py = {
      os.path.relpath(p, ROOT).replace(os.sep, '/')
      for p in glob.glob(os.path.join(ROOT, 'face_jax', '**', '*.py'), recursive=True)
  }
  assert py <= names, sorted(py - names)
  # Only the library: no tests, scripts or benchmarks, no bytecode caches.
  assert not [n for n in names if n.split('/')[0] in ('tests', 'scripts', 'benchmarks')]
  assert not [n for n in names if '__pycache__' in n]
