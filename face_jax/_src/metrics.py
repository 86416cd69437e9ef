"""Registration of the metrics computed on the streaming engine."""

from __future__ import annotations

import dataclasses

from face_jax._src import face as face_lib
from face_jax._src import registry

registry.register(registry.MetricInfo(
    name='face',
    plan=lambda info, options, dtype: face_lib.face_plan(info, face_lib.FaceOptions(**options), dtype),
    defaults={f.name: f.default for f in dataclasses.fields(face_lib.FaceOptions)},
    higher_is_better=True,
    citation='Ding et al., Unleashing the power of Neural Collapse for Transferability Estimation, '
             'arXiv 2310.05754 (2023); reconstruction per FACE_SPEC.md',
    summary='FaCe (Fair Collapse): variance collapse −NC1 plus class fairness of Bhattacharyya overlaps',
))
