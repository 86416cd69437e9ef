"""Runs tests/multidevice/ in a fresh process with 8 fake CPU devices."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_eight_fake_devices_in_subprocess():
  env = dict(os.environ)
  env['FACE_JAX_MULTIDEVICE'] = '1'
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8').strip()
  env['JAX_PLATFORMS'] = 'cpu'
  proc = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                         str(ROOT / 'tests' / 'multidevice')],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
  out = proc.stdout + proc.stderr
  assert proc.returncode == 0, out[-8000:]
  assert ' passed' in out and ' failed' not in out and ' skipped' not in out, out[-3000:]
