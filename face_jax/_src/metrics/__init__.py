"""The metric catalogue: importing this package registers every metric of face_jax.

One module per metric family; each defines its options class, its plan and
its finalisation, and registers its ``MetricInfo`` when imported.  Adding a
metric to the library is one new module here plus one line below (see
docs/baselines.md, "Adding a metric").
"""

from face_jax._src.metrics import face  # noqa: F401
from face_jax._src.metrics import collapse  # noqa: F401
from face_jax._src.metrics import logme  # noqa: F401
from face_jax._src.metrics import leep  # noqa: F401
from face_jax._src.metrics import hscore  # noqa: F401
from face_jax._src.metrics import transrate  # noqa: F401
from face_jax._src.metrics import gbc  # noqa: F401
from face_jax._src.metrics import sfda  # noqa: F401
from face_jax._src.metrics import ncti  # noqa: F401
from face_jax._src.metrics import etran  # noqa: F401
from face_jax._src.metrics import subsample  # noqa: F401
