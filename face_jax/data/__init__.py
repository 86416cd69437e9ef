"""face_jax.data: offline tfds datasets and a TensorFlow-free evaluation input pipeline.

>>> import face_jax.data as fd
>>> pipe = fd.get("digits", "test", data_dir="/tmp/tfds", batch_size=128)  # doctest: +SKIP
>>> for batch in pipe:                                                      # doctest: +SKIP
...   batch["image"], batch["label"], batch["_mask"]  # [128,8,8,1] u8, [128] i32, [128] bool

Shipped tfds builders (array_record, generated from local files only):
`digits`, `image_folder`, `arrays`, `text_csv`, `wordnet_glosses`.
"""

from face_jax.data.builders.arrays import Arrays
from face_jax.data.builders.digits import Digits
from face_jax.data.builders.image_folder import ImageFolder
from face_jax.data.builders.text_csv import TextCsv
from face_jax.data.builders.wordnet_glosses import WordnetGlosses
from face_jax.data.input_pipeline import ArraySpec
from face_jax.data.input_pipeline import DatasetNotPreparedError
from face_jax.data.input_pipeline import get
from face_jax.data.input_pipeline import MASK_KEY
from face_jax.data.input_pipeline import Pipeline
from face_jax.data.input_pipeline import process_range
from face_jax.data.input_pipeline import SHIPPED_BUILDERS

__all__ = (
    "Arrays",
    "ArraySpec",
    "DatasetNotPreparedError",
    "Digits",
    "get",
    "ImageFolder",
    "MASK_KEY",
    "Pipeline",
    "process_range",
    "SHIPPED_BUILDERS",
    "TextCsv",
    "WordnetGlosses",
)
