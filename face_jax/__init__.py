"""face_jax: which pre-trained model to fine-tune, from streamed feature statistics.

Synopsis::

    import face_jax
    result = face_jax.face_score(features, labels)           # [N, D], [N]
    print(result.score, result.variance_collapse, result.class_fairness)
    scores = face_jax.score(features, labels, metrics=('face',))
"""

from face_jax._src.api import face_score
from face_jax._src.baselines.etran import EtranComponents
from face_jax._src.baselines.ncti import NctiComponents
from face_jax._src.baselines.subsample import SubsampleResult
from face_jax._src.api import score
from face_jax._src.engine import Engine
from face_jax._src.engine import PassProgress
from face_jax._src.engine import Request
from face_jax._src.engine import StreamInfo
from face_jax._src.engine import default_mesh
from face_jax._src.errors import FaceJaxWarning
from face_jax._src.errors import InputError
from face_jax._src.face import FaCeResult
from face_jax._src.face import FaceOptions
from face_jax._src.face import face_from_moments
from face_jax._src.face import face_pool
from face_jax._src.pool import etran_pool
from face_jax._src.pool import ncti_pool
from face_jax._src.pool import pool_minmax
from face_jax._src.registry import names as metric_names
from face_jax._src.sources import ArraySource
from face_jax._src.sources import IterableSource
from face_jax._src.stats import Batch
from face_jax._src.stats import ClassMoments
from face_jax._src.stats import ClassScatter
from face_jax._src.stats import ClassScatterSpec
from face_jax._src.stats import Moments
from face_jax._src.stats import MomentsSpec
from face_jax._src.stats import Statistic
from face_jax.scoring import score_model

__version__ = '0.1.0'

__all__ = (
    'ArraySource',
    'Batch',
    'ClassMoments',
    'ClassScatter',
    'ClassScatterSpec',
    'Engine',
    'EtranComponents',
    'FaCeResult',
    'FaceJaxWarning',
    'FaceOptions',
    'InputError',
    'IterableSource',
    'Moments',
    'NctiComponents',
    'MomentsSpec',
    'PassProgress',
    'Request',
    'Statistic',
    'SubsampleResult',
    'StreamInfo',
    'default_mesh',
    'etran_pool',
    'face_from_moments',
    'face_pool',
    'face_score',
    'metric_names',
    'ncti_pool',
    'pool_minmax',
    'score',
    'score_model',
)
