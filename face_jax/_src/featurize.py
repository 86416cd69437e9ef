"""Featurizers: jittable maps from a raw device batch to per-stream ``Batch``es.

A featurizer runs inside the engine's jitted step, before the sharded
accumulation, so a Flax forward pass and the statistics compile into one
program and features never leave the device.  It must be hashable (the
compiled step is cached on it); ``ModelFeaturizer`` hashes by identity, so
reuse one object for every pass of a run.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from face_jax._src import stats as stats_lib

RESIZE_POLICIES = ('features_to_labels', 'labels_to_features')


@dataclasses.dataclass(frozen=True)
class Segmentation:
  """Per-pixel samples for semantic segmentation.

  Attributes:
    resize: "features_to_labels" (bilinear upsampling of the feature map to the
      label map: every labelled pixel is one sample) or "labels_to_features"
      (nearest-neighbour sampling of the label map at the feature map's pixel
      centres: one sample per feature pixel; much cheaper for large maps).
    ignore_label: label value that is masked out (255 by default).
  """

  resize: str = 'features_to_labels'
  ignore_label: int = 255

  def __post_init__(self):
    if self.resize not in RESIZE_POLICIES:
      raise ValueError(f'resize must be one of {RESIZE_POLICIES}, got {self.resize!r}')


def nearest_indices(src: int, dst: int) -> jax.Array:
  """Indices of the ``src`` cells whose centres are nearest to ``dst`` evenly spaced centres."""
  return jnp.clip(jnp.floor((jnp.arange(dst) + 0.5) * src / dst).astype(jnp.int32), 0, src - 1)


def pixel_batch(
    features: jax.Array, labels: jax.Array, mask: jax.Array, seg: Segmentation
) -> stats_lib.Batch:
  """Dense features [B, h, w, C] + label maps [B, H, W] -> one sample per pixel.

  Returns a ``Batch`` of B·P rows (P = H·W or h·w by ``seg.resize``); pixels
  with the ignore label, and every pixel of a padding image, are masked.
  """
  b, h, w, c = features.shape
  hl, wl = labels.shape[1], labels.shape[2]
  if seg.resize == 'features_to_labels':
    if (h, w) != (hl, wl):
      features = jax.image.resize(features.astype(jnp.float32), (b, hl, wl, c), 'bilinear')
  else:
    if (h, w) != (hl, wl):
      labels = labels[:, nearest_indices(hl, h)][:, :, nearest_indices(wl, w)]
  keep = (labels != seg.ignore_label) & mask[:, None, None]
  labels = jnp.where(keep, labels, 0)
  return stats_lib.Batch(
      features.reshape(-1, c), labels.reshape(-1).astype(jnp.int32), keep.reshape(-1)
  )


@dataclasses.dataclass(frozen=True, eq=False)
class ModelFeaturizer:
  """Runs a feature extractor's pure ``feature_fn`` and emits one stream per layer.

  Attributes:
    fn: ``fn(params, raw) -> {layer: features}`` (pooled [B, D], or dense maps
      [B, h, w, C] when ``segmentation`` is set).
    layers: the layers to emit as streams.
    source_probs_layer: a logits layer whose softmax becomes every stream's
      ``source_probs`` extra (the source model's own predictions), or None.
    segmentation: per-pixel samples (``Segmentation``), or None.
  """

  fn: Callable
  layers: tuple
  source_probs_layer: str | None = None
  segmentation: Segmentation | None = None

  def __call__(self, params, raw) -> dict[str, stats_lib.Batch]:
    feats = self.fn(params, raw)
    label, mask = raw['label'], raw['_mask']
    if self.segmentation is not None:
      return {l: pixel_batch(feats[l], label, mask, self.segmentation) for l in self.layers}
    extras = {'_index': raw['_index']}
    if self.source_probs_layer is not None:
      extras['source_probs'] = jax.nn.softmax(
          feats[self.source_probs_layer].astype(jnp.float32), axis=-1
      )
    return {l: stats_lib.Batch(feats[l], label, mask, dict(extras)) for l in self.layers}
