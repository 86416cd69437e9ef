"""The extension API of face_jax: the streaming engine, its statistics and the metric registry.

Synopsis (a metric defined outside the package; docs/baselines.md, "Adding a metric")::

    import dataclasses
    import numpy as np
    import face_jax
    from face_jax import engine

    @dataclasses.dataclass(frozen=True)
    class MeanNormOptions:
      scale: float = 1.0

    def mean_norm_plan(info, options, dtype):
      spec = engine.MomentsSpec(num_classes=info.num_classes, dim=info.dim, dtype=dtype)
      req = engine.Request(engine.Moments, spec, {'shift': engine.FIRST_BATCH_SHIFT,
                                                  'weight': np.ones(info.num_classes)})
      fin = (yield {'moments': req})['moments']           # ClassMoments (host, float64)
      return options.scale * float(np.linalg.norm(fin.global_mean()))

    engine.register(engine.MetricInfo(
        name='mean_norm', plan=mean_norm_plan, options=MeanNormOptions,
        higher_is_better=True, citation='-', summary='norm of the global mean; 1 pass'))
    face_jax.score(x, y, metrics=('mean_norm',), scale=2.0)['mean_norm']

Re-exports only; the implementations live in ``face_jax._src``.
"""

from face_jax._src.engine import Engine
from face_jax._src.engine import FIRST_BATCH_SHIFT
from face_jax._src.engine import PassCheckpoint
from face_jax._src.engine import PassProgress
from face_jax._src.engine import PassTotals
from face_jax._src.engine import Request
from face_jax._src.engine import StreamInfo
from face_jax._src.engine import default_mesh
from face_jax._src.engine import features_featurizer
from face_jax._src.engine import finite_rows
from face_jax._src.engine import health_counts
from face_jax._src.engine import min_feature_scale
from face_jax._src.featurize import ModelFeaturizer
from face_jax._src.metrics.collapse import balanced_weights
from face_jax._src.plan import PlanFailure
from face_jax._src.plan import PlanRun
from face_jax._src.plan import isolated
from face_jax._src.plan import run_plans
from face_jax._src.registry import MetricInfo
from face_jax._src.registry import get
from face_jax._src.registry import names
from face_jax._src.registry import register
from face_jax._src.registry import registered
from face_jax._src.registry import unregister
from face_jax._src.sources import ArraySource
from face_jax._src.sources import IterableSource
from face_jax._src.stats import Batch
from face_jax._src.stats import ClassCovariances
from face_jax._src.stats import ClassMoments
from face_jax._src.stats import ClassScatter
from face_jax._src.stats import ClassScatterSpec
from face_jax._src.stats import Moments
from face_jax._src.stats import MomentsSpec
from face_jax._src.stats import Statistic
from face_jax._src.stats import block_bounds
from face_jax._src.stats import two_sum
from face_jax._src.stats import upper_scatter

__all__ = (
    'ArraySource',
    'Batch',
    'ClassCovariances',
    'ClassMoments',
    'ClassScatter',
    'ClassScatterSpec',
    'Engine',
    'FIRST_BATCH_SHIFT',
    'IterableSource',
    'MetricInfo',
    'ModelFeaturizer',
    'Moments',
    'MomentsSpec',
    'PassCheckpoint',
    'PassProgress',
    'PassTotals',
    'PlanFailure',
    'PlanRun',
    'Request',
    'Statistic',
    'StreamInfo',
    'balanced_weights',
    'block_bounds',
    'default_mesh',
    'features_featurizer',
    'finite_rows',
    'health_counts',
    'isolated',
    'min_feature_scale',
    'get',
    'names',
    'register',
    'registered',
    'run_plans',
    'two_sum',
    'unregister',
    'upper_scatter',
)
