"""Tests that run on 8 fake CPU devices, in a separate process (see tests/test_multidevice.py)."""

import os

FLAG = '--xla_force_host_platform_device_count=8'
if FLAG not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') + ' ' + FLAG).strip()
