"""Helpers shared by the metric modules: classes, plan requests, option checks.

Nothing here is specific to one metric: the populated-class mask every
finalisation starts from, the class-moments request most one-pass plans share
(identical requests are accumulated once), and small host/device helpers of
the statistics.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np

from face_jax._src import engine as engine_lib
from face_jax._src import stats as stats_lib
from face_jax._src.errors import FaceJaxWarning, InputError

# What to do when a PCA dimension exceeds min(N, D): 'clip' (warn, use the
# largest possible) or 'error' (raise, as the reference implementations do).
PCA_DIM_POLICIES = ('clip', 'error')


def populated_classes(counts: np.ndarray, metric: str) -> np.ndarray:
  """[K] bool mask of classes with samples; warns about empty ones, needs at least 2.

  Args:
    counts: [K] samples per class.
    metric: the metric's name (for the messages).

  Raises:
    InputError: fewer than 2 populated classes.
  """
  counts = np.asarray(counts, np.float64)
  present = counts > 0
  if int(present.sum()) < 2:
    shown = counts[:20].astype(np.int64).tolist()
    raise InputError(
        f'{metric} needs at least 2 populated classes, got {int(present.sum())} '
        f'(class counts: {shown}' + (' ...)' if counts.size > 20 else ')')
    )
  absent = np.flatnonzero(~present)
  if absent.size:
    warnings.warn(
        f'{metric}: {absent.size} class(es) have no sample and are left out: '
        f'{absent[:20].tolist()}' + (' ...' if absent.size > 20 else ''),
        FaceJaxWarning,
        stacklevel=3,
    )
  return present


def embed_classes(values: np.ndarray, present: np.ndarray, axis: int, fill=0.0) -> np.ndarray:
  """Scatters ``values`` (one entry per populated class along ``axis``) into all K classes."""
  values = np.asarray(values, np.float64)
  shape = list(values.shape)
  shape[axis] = present.shape[0]
  out = np.full(shape, fill, np.float64)
  idx = [slice(None)] * values.ndim
  idx[axis] = np.flatnonzero(present)
  out[tuple(idx)] = values
  return out


def moments_request(
    info: engine_lib.StreamInfo, dtype: str, scatter: bool = True
) -> engine_lib.Request:
  """Moments about the first batch's class means with unit class weights.

  The same request FaCe makes with ``weighting="sample"`` (or equal counts),
  so the engine accumulates it once for every metric that asks.
  """
  spec = stats_lib.MomentsSpec(
      num_classes=info.num_classes, dim=info.dim, dtype=dtype, scatter=scatter
  )
  return engine_lib.Request(
      stats_lib.Moments,
      spec,
      {'shift': engine_lib.FIRST_BATCH_SHIFT, 'weight': np.ones((info.num_classes,), np.float64)},
  )


def choice(value, allowed, name: str, metric: str):
  """``value`` if it is one of ``allowed``, else ``InputError`` naming the metric and option."""
  if value not in allowed:
    raise InputError(f'{metric}: {name} must be one of {allowed}, got {value!r}')
  return value


def source_classes(info: engine_lib.StreamInfo, metric: str) -> int:
  """Ks, the trailing dimension of the stream's ``source_probs`` (``InputError`` if absent)."""
  shape = info.extras.get('source_probs')
  if shape is None:
    raise InputError(
        f'{metric} needs source-model probabilities: pass source_probs=[N, Ks] '
        "(or a 'source_probs' entry in every streamed batch)"
    )
  if len(shape) != 1 or shape[0] < 1:
    raise InputError(f'{metric}: source_probs must be [N, Ks], got trailing shape {tuple(shape)}')
  return int(shape[0])


def resolve_pca_dim(
    requested: int, n: int, d: int, policy: str, metric: str, what: str = 'PCA'
) -> int:
  """min(requested, N, D) under ``policy`` ('clip': warn; 'error': raise)."""
  limit = min(int(n), int(d))
  if requested <= limit:
    return int(requested)
  msg = (
      f'{metric}: {what} to {requested} dimensions needs min(N, D) >= {requested} '
      f'(N={int(n)}, D={int(d)})'
  )
  if policy == 'error':
    raise InputError(msg + '; the reference recipe is not defined for these features')
  warnings.warn(
      msg + f'; using {limit} dimensions instead (the reference raises; ' 'recorded in the result)',
      FaceJaxWarning,
      stacklevel=3,
  )
  return limit


def host64(tree):
  """A statistic's leaves as host float64 numpy arrays (the start of every ``finalize``)."""
  return jax.tree.map(lambda a: np.asarray(jax.device_get(a), np.float64), tree)


def labels_mask(spec, batch: stats_lib.Batch):
  """Returns (y [B] int32 clamped into ``[0, spec.num_classes)``, m [B] bool)."""
  y = jnp.clip(batch.labels.astype(jnp.int32), 0, spec.num_classes - 1)
  return y, batch.mask
