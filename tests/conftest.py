"""Test configuration.

Tests under tests/multidevice/ need 8 fake CPU devices, which must be set up
before JAX initialises; they run in their own process, launched by
tests/test_multidevice.py with FACE_JAX_MULTIDEVICE=1 and XLA_FLAGS set.
"""

import os

collect_ignore = [] if os.environ.get('FACE_JAX_MULTIDEVICE') == '1' else ['multidevice']
