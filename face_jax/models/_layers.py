"""Small building blocks shared by the model families (private).

All helpers take and return NHWC / [B, T, D] float32 arrays.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# ---------------------------------------------------------------------------------------------
# Host-side initialisers.
#
# jax.random.normal compiles one XLA program per parameter shape, which costs ~0.4 s per shape on
# a small CPU (tens of seconds for a ResNet-50). These initialisers therefore draw on the host
# with numpy (PCG64 seeded from the nnx key's raw data: deterministic for a given seed, identical
# on every platform) and place the result with an explicit jax.device_put. Under tracing
# (nnx.eval_shape, jit) they fall back to the equivalent jax.random draw, which gives the same
# shapes and distribution but other values; models here are always initialised eagerly.
# ---------------------------------------------------------------------------------------------


def make_rngs(seed: int) -> nnx.Rngs:
  """nnx.Rngs for a non-negative int seed, built with an explicit host-to-device transfer
  (equal to nnx.Rngs(seed) for seeds below 2**32)."""
  seed = int(seed)
  if not 0 <= seed < 2**32:
    raise ValueError(f"seed must be in [0, 2**32), got {seed}")
  return nnx.Rngs(jax.random.key(jax.device_put(np.uint32(seed))))


def _fans(shape) -> tuple[int, int]:
  """(fan_in, fan_out) of a kernel: dense [in, out]; conv [kh, kw, in, out] (receptive field)."""
  if len(shape) < 2:
    n = int(shape[0]) if shape else 1
    return n, n
  receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
  return int(shape[-2]) * receptive, int(shape[-1]) * receptive


def _host_init(sample):
  """Wraps sample(rng: np.random.Generator, shape) -> float64 ndarray as an nnx initializer."""

  def init(key, shape, dtype=jnp.float32):
    shape = tuple(int(s) for s in shape)
    if isinstance(key, jax.core.Tracer):
      return _traced_fallback(sample, key, shape, dtype)
    words = np.asarray(jax.device_get(jax.random.key_data(key))).ravel()
    rng = np.random.default_rng([int(w) for w in words])
    return jax.device_put(np.asarray(sample(rng, shape), dtype=dtype))

  init.sample = sample
  return init


def _traced_fallback(sample, key, shape, dtype):
  # Reuse the numpy sampler's distribution through a tiny shim over jax.random.
  class _JaxRng:

    def standard_normal(self, shp):
      return jax.random.normal(key, shp, jnp.float32)

    def uniform(self, lo, hi, shp):
      return jax.random.uniform(key, shp, jnp.float32, lo, hi)

    def truncated(self, shp):
      return jax.random.truncated_normal(key, -2.0, 2.0, shp, jnp.float32)

  return jnp.asarray(sample(_JaxRng(), shape), dtype)


def _truncated_standard_normal(rng, shape):
  """N(0, 1) truncated to [-2, 2] by resampling (jax.random.truncated_normal's support)."""
  if hasattr(rng, "truncated"):
    return rng.truncated(shape)
  x = rng.standard_normal(shape)
  bad = np.abs(x) > 2.0
  while bad.any():
    x[bad] = rng.standard_normal(int(bad.sum()))
    bad = np.abs(x) > 2.0
  return x


def normal_init(std: float):
  """N(0, std^2)."""
  return _host_init(lambda rng, shape: std * rng.standard_normal(shape))


def truncated_normal_init(std: float):
  """std * N(0, 1) truncated at +-2 (before scaling)."""
  return _host_init(lambda rng, shape: std * _truncated_standard_normal(rng, shape))


def he_normal_fan_out_init():
  """N(0, 2 / fan_out): torchvision ResNet's kaiming_normal_(mode="fan_out",
  nonlinearity="relu") (He et al., 2015, "Delving deep into rectifiers")."""
  return _host_init(lambda rng, shape: np.sqrt(2.0 / _fans(shape)[1]) * rng.standard_normal(shape))


def xavier_uniform_init():
  """U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio, 2010)."""

  def sample(rng, shape):
    fi, fo = _fans(shape)
    a = float(np.sqrt(6.0 / (fi + fo)))
    return rng.uniform(-a, a, shape)

  return _host_init(sample)


def torch_linear_init():
  """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): torch.nn.Linear's default weight init."""

  def sample(rng, shape):
    a = float(1.0 / np.sqrt(_fans(shape)[0]))
    return rng.uniform(-a, a, shape)

  return _host_init(sample)


kaiming_fan_out = he_normal_fan_out_init()

# torch BatchNorm2d defaults: eps = 1e-5, running-average update weight 0.1 (flax momentum 0.9).
BN_EPS = 1e-5
BN_MOMENTUM = 0.9


def conv(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, *, rngs: nnx.Rngs, use_bias: bool = False
) -> nnx.Conv:
  """A k x k convolution with torch-style symmetric padding (k // 2 on each side)."""
  pad = kernel // 2
  return nnx.Conv(
      in_ch,
      out_ch,
      (kernel, kernel),
      strides=(stride, stride),
      padding=((pad, pad), (pad, pad)),
      use_bias=use_bias,
      kernel_init=kaiming_fan_out,
      rngs=rngs,
  )


def batch_norm(ch: int, *, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """BatchNorm over the channel (last) axis with torch's defaults (eps 1e-5, momentum 0.1)."""
  return nnx.BatchNorm(ch, momentum=BN_MOMENTUM, epsilon=BN_EPS, rngs=rngs)


def classifier_head(
    in_features: int, num_classes: int | None, *, rngs: nnx.Rngs, kernel_init=None
) -> nnx.Linear | None:
  """The optional classifier Linear(in_features -> num_classes); None when num_classes is None.

  kernel_init defaults to torch.nn.Linear's U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the bias starts
  at zero.
  """
  if num_classes is None:
    return None
  if kernel_init is None:
    kernel_init = torch_linear_init()
  return nnx.Linear(in_features, num_classes, kernel_init=kernel_init, rngs=rngs)


def tap_names(names, num_classes: int | None) -> tuple[str, ...]:
  """Layer names in forward order, with "logits" last when the model has a classifier."""
  return tuple(names) + (("logits",) if num_classes is not None else ())


def max_pool(x: jax.Array, window: int, stride: int, pad: int = 0) -> jax.Array:
  """Max pooling of x [B, H, W, C]; padded positions hold -inf (torch MaxPool2d semantics)."""
  return jax.lax.reduce_window(
      x,
      -jnp.inf,
      jax.lax.max,
      (1, window, window, 1),
      (1, stride, stride, 1),
      ((0, 0), (pad, pad), (pad, pad), (0, 0)),
  )


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, as torch.nn.GELU() and HF BERT's "gelu" (Hendrycks & Gimpel, 2016)."""
  return jax.nn.gelu(x, approximate=False)


def check_layers(layers, layer_names: tuple[str, ...]) -> tuple[str, ...]:
  """Validates requested layer names; returns them as a tuple.

  Raises:
    ValueError: on an unknown layer name (the message lists the valid ones).
  """
  layers = tuple(layers)
  unknown = [l for l in layers if l not in layer_names]
  if unknown:
    raise ValueError(f"unknown layer(s) {unknown}; valid layers: {list(layer_names)}")
  return layers
