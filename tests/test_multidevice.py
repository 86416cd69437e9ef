"""Runs tests/multidevice/ in a fresh process with 8 fake CPU devices.

Every module there asserts ``jax.device_count() == 8`` at import; the summary
must list each module's tests as passed (test_metrics_8dev.py: every streamed
metric on 8 devices).
"""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODULES = sorted(p.name for p in (ROOT / 'tests' / 'multidevice').glob('test_*_8dev.py'))


def test_eight_fake_devices_in_subprocess():
  assert 'test_metrics_8dev.py' in MODULES, MODULES
  env = dict(os.environ)
  env['FACE_JAX_MULTIDEVICE'] = '1'
  flags = env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
  env['XLA_FLAGS'] = flags.strip()
  env['JAX_PLATFORMS'] = 'cpu'
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'pytest',
          '-q',
          '-rA',
          '-p',
          'no:cacheprovider',
          str(ROOT / 'tests' / 'multidevice'),
      ],
      cwd=ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=1500,
  )
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, out[-8000:]
  assert ' passed' in out and ' failed' not in out and ' skipped' not in out, out[-3000:]
  for module in MODULES:
    assert f'PASSED tests/multidevice/{module}::' in out, (module, out[-3000:])
