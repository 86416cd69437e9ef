"""Scoring the zoo with every registered metric, and the statistics of the FaCe ablation.

Synopsis::

    from benchmarks.zoo import harness
    infos = harness.metric_infos()                       # every registered metric
    recs = harness.score_extractor(ex, images, labels, infos)
    # {metric: {'value', 'error', 'higher_is_better', 'pool_relative', ...}}
    terms = harness.face_variant_terms(features, labels)  # {variant key: {'C', 'F', 'nc1'}}
    scores = harness.oriented_scores(per_model_records, 'face')   # {model: score}, higher = better

Records, failure isolation and pool-relative scores are the package's
(``face_jax.collection_scoring``, which ``scripts/score.py`` uses too); this
module names them for the benchmark and adds the FaCe ablation grid.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Mapping

import numpy as np

from face_jax import collection_scoring as cs

FACE_POOL = cs.FACE_POOL
FACE_POOLS = cs.FACE_POOLS
metric_infos = cs.metric_infos
score_extractor = cs.score_extractor
available_scores = cs.available_scores
oriented_scores = cs.oriented_scores

# The FaCe ablation grid: every variant of the specification (docs/face.md) at the
# default temperature 0.1, ridge 1e-3 and λ = 1.
ABLATION_AXES = cs.FACE_VARIANT_CHOICES
# The specification's default variant: the reference of the ablation's paired differences
# (face_jax's own default, FaceOptions(), is the variant this ablation selected).
DEFAULT_VARIANT = {
    'weighting': 'balanced',
    'vc_transform': 'neg',
    'bc_cov': 'pooled',
    'fairness': 'std',
}


def variant_key(v: Mapping[str, str]) -> str:
  """'weighting/vc_transform/bc_cov/fairness', e.g. 'balanced/neg/pooled/std'."""
  return '/'.join(v[a] for a in ABLATION_AXES)


def ablation_variants() -> list[dict[str, str]]:
  """Every variant of the grid (2 x 2 x 3 x 3 = 36), the default first."""
  out = [dict(zip(ABLATION_AXES, combo)) for combo in itertools.product(*ABLATION_AXES.values())]
  out.sort(key=lambda v: v != DEFAULT_VARIANT)
  return out


def face_variant_terms(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int | None = None,
    variants: Iterable[Mapping[str, str]] | None = None,
) -> dict[str, dict]:
  """C, F and NC1 of every FaCe variant, from one pass of statistics.

  Args:
    features: [N, D] features.
    labels: [N] int labels.
    num_classes: K (default ``labels.max() + 1``).
    variants: default ``ablation_variants()``.

  Returns:
    ``{variant_key: {'C': float, 'F': float, 'nc1': float}}``.
  """
  variants = list(variants or ablation_variants())
  terms = cs.face_variant_terms(features, labels, variants, num_classes)
  return {variant_key(v): t for v, t in zip(variants, terms)}
