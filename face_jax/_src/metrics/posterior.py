"""Posterior sums of a linear classifier fitted on an earlier pass (SFDA, NCTI, ETran).

Synopsis::

    # pass 1: class moments -> a linear classifier on the host (float64)
    spec = PosteriorSpec(num_classes=K, dim=D, gram=True)
    params = {'center': g, 'coef': A, 'bias': b, 'valid': v}
    req = Request(LinearPosterior, spec, params)          # pass 2
    post = engine.run_pass(src, {'features': {'p': req}})['features']['p']
    post.true_prob.sum() / post.counts.sum()               # mean P(y_i | x_i)

Every statistic here is a sum over samples of a function of that sample and
of the previous pass's finalised parameters (passed as ``params``: a new pass
with other params reuses the compiled step):

* ``LinearPosterior``: the posteriors P_i = softmax(A^T (x_i − c) + b) of a
  linear classifier fitted on the host after an earlier pass; accumulates per
  class the summed posterior of the true class and, optionally, the per-class
  Gram matrices Σ_{i∈k} P_i P_iᵀ (NCTI's nuclear norms).  With
  ``confmix=True`` the classifier is applied to SFDA's ConfMix-mixed features
  (below) instead of x_i.
* ``confmix``: SFDA's ConfMix-mixed features x'_i = w_i (x_i − c) + (1 − w_i)
  m̄_{y_i}, w_i = softmax(P_i)[y_i], computed per sample on device from the
  pass-1 classifier (also the input of ``sfda.ConfMixMoments``).

Classes without samples ("absent") are excluded by the ``valid`` [K] param:
their logits are −∞ (posterior 0), so the posteriors are those of a
classifier over the populated classes only, exactly as the reference
implementations, which only know the labels that occur.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from face_jax._src import stats as stats_lib

Array = jax.Array
HIGHEST = jax.lax.Precision.HIGHEST

# Rows per chunk of the per-class Gram accumulation are chosen so that one
# chunk's outer products [rows, K, K] hold at most this many elements.
GRAM_CHUNK_ELEMENTS = 1 << 22


def _dt(spec):
  return jnp.dtype(spec.dtype)


def centred_rows(spec, params, batch: stats_lib.Batch):
  """(x − center) [B, D] (padding rows zeroed), labels [B] (clipped), mask [B] (accum dtype)."""
  dt = _dt(spec)
  y = jnp.clip(batch.labels.astype(jnp.int32), 0, spec.num_classes - 1)
  xc = batch.features.astype(dt) - params['center'].astype(dt)[None, :]
  xc = jnp.where(batch.mask[:, None], xc, jnp.zeros((), dt))
  return xc, y, batch.mask.astype(dt)


def masked_softmax(logits: Array, valid: Array) -> Array:
  """Row softmax over the classes with ``valid > 0`` ([B, K] -> [B, K]; invalid columns 0)."""
  ok = (valid > 0)[None, :]
  z = jnp.where(ok, logits, -jnp.inf)
  z = z - jax.lax.stop_gradient(jnp.max(z, axis=1, keepdims=True))
  e = jnp.where(ok, jnp.exp(z), jnp.zeros((), logits.dtype))
  return e / jnp.sum(e, axis=1, keepdims=True)


def linear_posteriors(xc: Array, coef: Array, bias: Array, valid: Array) -> Array:
  """P = softmax(xc @ coef + bias) over the valid classes; xc [B, D], coef [D, K], bias [K]."""
  logits = jnp.dot(xc, coef.astype(xc.dtype), precision=HIGHEST) + bias.astype(xc.dtype)[None, :]
  return masked_softmax(logits, valid)


def confmix(xc: Array, y: Array, params) -> Array:
  """SFDA's ConfMix: x'_i = w_i xc_i + (1 − w_i) m̄_{y_i}, w_i = softmax_c(P_i)[y_i].

  P_i = softmax(xc_i @ mix_coef + mix_bias) are the pass-1 LDA posteriors; the
  second softmax is applied to the probabilities themselves (TencentARC/SFDA,
  ``metrics.py :: SFDA_Score``).  ``mbar`` [K, D] is the average of the other
  classes' means (same centred coordinates as ``xc``).
  """
  valid = params['valid'].astype(xc.dtype)
  p = linear_posteriors(xc, params['mix_coef'], params['mix_bias'], valid)
  p2 = masked_softmax(p, valid)
  w = jnp.take_along_axis(p2, y[:, None], axis=1)  # [B, 1]
  return w * xc + (1.0 - w) * params['mbar'].astype(xc.dtype)[y]


@dataclasses.dataclass(frozen=True)
class PosteriorSpec:
  """Static configuration of ``LinearPosterior`` (hashable).

  Attributes:
    num_classes: K.
    dim: D.
    dtype: accumulation dtype name.
    gram: also accumulate the per-class Gram matrices [K, K, K] (K³ elements:
      1e6 for K = 100, 1e9 = 4 GiB in float32 for K = 1000; x2 with the
      engine's compensated sums, per device).
    confmix: apply the classifier to SFDA's ConfMix-mixed features.
  """

  num_classes: int
  dim: int
  dtype: str = 'float32'
  gram: bool = False
  confmix: bool = False


@dataclasses.dataclass(frozen=True)
class PosteriorSums:
  """Finalised ``LinearPosterior`` (host, float64).

  Attributes:
    counts: [K] samples per class.
    true_prob: [K] Σ_{i∈k} P_i[k] (summed posterior of the true class).
    gram: [K, K, K] Σ_{i∈k} P_i P_iᵀ, or None.
  """

  counts: np.ndarray
  true_prob: np.ndarray
  gram: np.ndarray | None


class LinearPosterior(stats_lib.Statistic):
  """Posterior sums of a fixed linear classifier (params from an earlier pass).

  params: ``center`` [D], ``coef`` [D, K], ``bias`` [K], ``valid`` [K] (1 for
  populated classes, else 0); with ``confmix`` also ``mix_coef`` [D, K],
  ``mix_bias`` [K], ``mbar`` [K, D] (see ``confmix``).

  Memory: 2K (+ K³ with ``gram``) accumulator elements.
  """

  count: Array  # [K]
  true_prob: Array  # [K]
  gram: Array  # [K, K, K] or [1, 1, 1]

  @classmethod
  def empty(cls, spec: PosteriorSpec) -> 'LinearPosterior':
    dt, k = _dt(spec), spec.num_classes
    g = (k, k, k) if spec.gram else (1, 1, 1)
    return cls(count=jnp.zeros((k,), dt), true_prob=jnp.zeros((k,), dt), gram=jnp.zeros(g, dt))

  @classmethod
  def from_batch(cls, spec: PosteriorSpec, params, batch: stats_lib.Batch) -> 'LinearPosterior':
    xc, y, m = centred_rows(spec, params, batch)
    k = spec.num_classes
    if spec.confmix:
      xc = confmix(xc, y, params)
    p = linear_posteriors(xc, params['coef'], params['bias'], params['valid'].astype(xc.dtype))
    p = p * m[:, None]  # padding rows -> 0
    count = jax.ops.segment_sum(m, y, num_segments=k)
    true = jax.ops.segment_sum(jnp.take_along_axis(p, y[:, None], axis=1)[:, 0], y, num_segments=k)
    if spec.gram:
      gram = _class_grams(p, y, k)
    else:
      gram = jnp.zeros((1, 1, 1), xc.dtype)
    return cls(count=count, true_prob=true, gram=gram)

  def finalize(self, spec: PosteriorSpec, params) -> PosteriorSums:
    h = jax.tree.map(lambda a: np.asarray(jax.device_get(a), np.float64), self)
    gram = None
    if spec.gram:
      gram = 0.5 * (h.gram + np.swapaxes(h.gram, 1, 2))
    return PosteriorSums(counts=h.count, true_prob=h.true_prob, gram=gram)


def _class_grams(p: Array, y: Array, k: int) -> Array:
  """[K, K, K] Σ_{i: y_i = c} p_i p_iᵀ, in row chunks bounding the [rows, K, K] temporary."""
  b = p.shape[0]
  rows = int(max(1, min(b, GRAM_CHUNK_ELEMENTS // (k * k))))
  nchunks = -(-b // rows)
  pad = nchunks * rows - b
  if pad:
    p = jnp.pad(p, ((0, pad), (0, 0)))
    y = jnp.pad(y, (0, pad))  # padded rows have p = 0: no contribution
  pc = p.reshape(nchunks, rows, k)
  yc = y.reshape(nchunks, rows)

  def body(acc, inp):
    pi, yi = inp
    outer = pi[:, :, None] * pi[:, None, :]
    return acc + jax.ops.segment_sum(outer, yi, num_segments=k), None

  # zeros_like keeps the varying-manual-axes type of p inside shard_map.
  acc, _ = jax.lax.scan(body, jnp.zeros_like(p, shape=(k, k, k)), (pc, yc))
  return acc
