"""face_jax: which pre-trained model to fine-tune, from streamed feature statistics.

Synopsis::

    import face_jax
    result = face_jax.face_score(features, labels)           # [N, D], [N]
    print(result.score, result.variance_collapse, result.class_fairness)
    scores = face_jax.score(features, labels, metrics=('face', 'logme'))

This module is the user API.  The extension API (the streaming engine, its
statistics, sources and the metric registry) is ``face_jax.engine``; the
in-memory float64 oracles are ``face_jax.dense``.
"""

from face_jax._src.api import face_score
from face_jax._src.api import score
from face_jax._src.engine import Engine
from face_jax._src.engine import PassProgress
from face_jax._src.engine import default_mesh
from face_jax._src.errors import FaceJaxWarning
from face_jax._src.errors import InputError
from face_jax._src.metrics.collapse import Nc1Options
from face_jax._src.metrics.collapse import VciOptions
from face_jax._src.metrics.etran import EtranComponents
from face_jax._src.metrics.etran import EtranOptions
from face_jax._src.metrics.etran import etran_pool
from face_jax._src.metrics.face import FaCeResult
from face_jax._src.metrics.face import FaceOptions
from face_jax._src.metrics.face import face_from_moments
from face_jax._src.metrics.face import face_pool
from face_jax._src.metrics.face import face_pool_shares
from face_jax._src.metrics.gbc import GbcOptions
from face_jax._src.metrics.hscore import HscoreOptions
from face_jax._src.metrics.hscore import RegHscoreOptions
from face_jax._src.metrics.leep import LeepOptions
from face_jax._src.metrics.leep import NceOptions
from face_jax._src.metrics.logme import LogmeOptions
from face_jax._src.metrics.ncti import NctiComponents
from face_jax._src.metrics.ncti import NctiOptions
from face_jax._src.metrics.ncti import ncti_pool
from face_jax._src.metrics.sfda import SfdaOptions
from face_jax._src.metrics.subsample import NleepOptions
from face_jax._src.metrics.subsample import ParcOptions
from face_jax._src.metrics.subsample import SubsampleResult
from face_jax._src.metrics.transrate import TransrateOptions
from face_jax._src.pool import pool_combine
from face_jax._src.pool import pool_minmax
from face_jax._src.registry import names as metric_names
from face_jax.scoring import score_model

__version__ = '0.1.0'

__all__ = (
    'Engine',
    'EtranComponents',
    'EtranOptions',
    'FaCeResult',
    'FaceJaxWarning',
    'FaceOptions',
    'GbcOptions',
    'HscoreOptions',
    'InputError',
    'LeepOptions',
    'LogmeOptions',
    'Nc1Options',
    'NceOptions',
    'NctiComponents',
    'NctiOptions',
    'NleepOptions',
    'ParcOptions',
    'PassProgress',
    'RegHscoreOptions',
    'SfdaOptions',
    'SubsampleResult',
    'TransrateOptions',
    'VciOptions',
    'default_mesh',
    'etran_pool',
    'face_from_moments',
    'face_pool',
    'face_pool_shares',
    'face_score',
    'metric_names',
    'ncti_pool',
    'pool_combine',
    'pool_minmax',
    'score',
    'score_model',
)
