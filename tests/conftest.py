"""Test configuration.

Tests under tests/multidevice/ need 8 fake CPU devices, which must be set up
before JAX initialises; they run in their own process, launched by
tests/test_multidevice.py with FACE_JAX_MULTIDEVICE=1 and XLA_FLAGS set.

Hypothesis profiles of the property tests (tests/property/): "ci", the default,
runs few examples from a fixed seed (reproducible runs, no example database);
"thorough" (``pytest tests/property --hypothesis-profile=thorough``) runs many
random ones.  Neither has a deadline: the first example of a shape compiles.
"""

import os

from hypothesis import settings

collect_ignore = [] if os.environ.get('FACE_JAX_MULTIDEVICE') == '1' else ['multidevice']

settings.register_profile('ci', max_examples=6, deadline=None, derandomize=True, database=None)
settings.register_profile('thorough', max_examples=200, deadline=None, print_blob=True)
settings.load_profile('ci')
