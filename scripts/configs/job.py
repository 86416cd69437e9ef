r"""The batch job's default config (``scripts/score.py --config=scripts/configs/job.py``).

A config file returns an ``ml_collections.ConfigDict`` from ``get_config()`` (the
convention of big_vision and the flax examples).  Copy this file to describe a
long run; every field can also be set on the command line, e.g.
``--config.metrics=face,logme --config.batch_size=512``, and the flags
``--models``, ``--dataset``, ``--split``, ``--data_dir``, ``--layers``,
``--metrics``, ``--batch_size``, ``--output_dir``, ``--ground_truth``,
``--checkpoint_every_steps`` are shortcuts that set the field of the same name.
Lists are comma-separated strings.

With neither ``models`` nor ``dataset`` set, ``scripts/score.py`` runs its
default main job (the bundled zoo on digits).
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  # What is scored.
  c.models = ''  # comma list: collection dirs, preset[:weights], name=preset:weights, name=f.npz
  c.dataset = ''  # a shipped builder or a tfds name prepared offline
  c.split = 'train'
  c.data_dir = ''  # tfds data directory ('': $TFDS_DATA_DIR or ~/tensorflow_datasets)
  c.dataset_options = ''  # builder options, key=value comma list (root_dir=..., arrays=f.npz)
  c.layers = ''  # comma list ('': each model's default layer)
  c.metrics = 'face'  # comma list of face_jax.metric_names()
  c.batch_size = 256  # rows per step per process
  c.dtype = 'float32'
  # Where results and checkpoints go; how often a pass is checkpointed.
  c.output_dir = 'out/score'
  c.checkpoint_every_steps = 100
  # Evaluation and display.
  c.ground_truth = ''  # CSV or JSON of per-model accuracies
  c.rank_by = (
      ''  # default: FaCe's pool score (face_pool_zscore) when face is first, else the first metric
  )
  c.n_boot = 200
  c.log_every_seconds = 5.0
  c.one_read = False  # each batch through every model in turn (the data read once)
  c.nonfinite = 'raise'  # 'skip': rows with a non-finite feature left out, counted, reported
  return c
