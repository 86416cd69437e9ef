"""`image_folder`: a directory with one sub-folder per class, as a tfds dataset.

>>> import face_jax.data as fd
>>> pipe = fd.get("image_folder", "train", data_dir="/tmp/tfds",
...               root_dir="/data/pets", image_size=32)  # doctest: +SKIP
>>> pipe.class_names                                      # doctest: +SKIP
['cat', 'dog']

Layout::

    root_dir/
      cat/  a.png  b.jpg  ...
      dog/  c.jpeg ...

* Classes are the sub-folders of `root_dir`, sorted by name; label k is the k-th
  name (names are kept in the `label` ClassLabel feature). Hidden folders
  (starting with ".") are ignored.
* Images are the files with extension .png, .jpg, .jpeg or .bmp (any case)
  anywhere below a class folder, in sorted relative-path order; other files are
  ignored.
* Every image is decoded with Pillow, converted to RGB (`channels=3`) or
  grayscale (`channels=1`), and resized to `image_size` (H, W) with bilinear
  interpolation, without keeping the aspect ratio (no crop). Images are stored
  PNG-encoded (lossless) in a `tfds.features.Image` of shape [H, W, C].
* `root_dir` may also be a mapping `{split: directory}` (e.g. separate train and
  test folders); class names are then the sorted union over all splits. A single
  directory gives one split, `train`.

The builder-config name is `{H}x{W}x{C}-{digest}`, where the digest covers the
options and every image's path, size and modification time: changing the
folder creates a new prepared dataset instead of reusing a stale one.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from face_jax.data.builders import common

_NAME = "image_folder"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


@dataclasses.dataclass(eq=False, repr=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
  """Options of `ImageFolder`.

  Attributes:
    roots: {split name: absolute root directory}.
    image_size: (H, W) of the stored images.
    channels: 3 (RGB) or 1 (grayscale).
    class_names: sorted class-folder names (union over splits).
    files: {split: [(relative path "class/...", label), ...]} in sorted order.
  """

  roots: dict[str, str] = dataclasses.field(default_factory=dict)
  image_size: tuple[int, int] = (32, 32)
  channels: int = 3
  class_names: list[str] = dataclasses.field(default_factory=list)
  files: dict[str, list[tuple[str, int]]] = dataclasses.field(default_factory=dict)

  def __repr__(self) -> str:  # the file list would flood logs
    sizes = {s: len(f) for s, f in self.files.items()}
    return (
        f"ImageFolderConfig(name={self.name!r}, roots={self.roots!r}, "
        f"image_size={self.image_size}, channels={self.channels}, examples={sizes}, "
        f"num_classes={len(self.class_names)})"
    )


def _normalize_size(image_size: Any) -> tuple[int, int]:
  if isinstance(image_size, (int, np.integer)):
    size = (int(image_size), int(image_size))
  else:
    size = tuple(int(s) for s in image_size)
  if len(size) != 2 or min(size) < 1:
    raise ValueError(f"image_size must be an int or (H, W) of positive ints, got {image_size!r}.")
  return size  # type: ignore[return-value]


def _class_dirs(root: str) -> list[str]:
  if not os.path.isdir(root):
    raise FileNotFoundError(f"image_folder: root directory {root!r} does not exist.")
  return sorted(
      d for d in os.listdir(root) if not d.startswith(".") and os.path.isdir(os.path.join(root, d))
  )


def _list_images(root: str, class_dir: str) -> list[str]:
  """Relative paths ("class/sub/x.png") of the images under one class folder, sorted."""
  out = []
  base = os.path.join(root, class_dir)
  for dirpath, dirnames, filenames in os.walk(base):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    for f in filenames:
      if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
        out.append(os.path.relpath(os.path.join(dirpath, f), root))
  return sorted(out)


def make_config(root_dir: Any, image_size: Any = 32, channels: int = 3) -> ImageFolderConfig:
  """Scans `root_dir` and returns a fingerprinted `ImageFolderConfig`.

  Args:
    root_dir: a directory (one split, `train`) or `{split: directory}`.
    image_size: int or (H, W).
    channels: 3 (RGB) or 1 (grayscale).

  Returns:
    The config, whose name identifies the options and the files' identities.

  Raises:
    FileNotFoundError: a root directory does not exist.
    ValueError: bad options, no class folder, or a split without images.
  """
  size = _normalize_size(image_size)
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels!r}.")
  roots = common.normalize_split_sources(
      root_dir, kind="root_dir", is_single=lambda x: not isinstance(x, Mapping)
  )
  roots = {s: os.path.abspath(os.fspath(r)) for s, r in roots.items()}
  per_split_classes = {s: _class_dirs(r) for s, r in roots.items()}
  class_names = sorted(set().union(*per_split_classes.values()))
  if not class_names:
    raise ValueError(f"image_folder: no class sub-folder found under {list(roots.values())}.")
  index = {c: k for k, c in enumerate(class_names)}
  files: dict[str, list[tuple[str, int]]] = {}
  stat_keys = []
  for split, root in roots.items():
    entries = []
    for c in per_split_classes[split]:
      for rel in _list_images(root, c):
        entries.append((rel, index[c]))
        st = os.stat(os.path.join(root, rel))
        stat_keys.append([split, rel, st.st_size, st.st_mtime_ns])
    if not entries:
      raise ValueError(
          f"image_folder: split {split!r} ({root}) has no image with extension "
          f"in {IMAGE_EXTENSIONS}."
      )
    files[split] = entries
  digest = common.fingerprint(
      {
          "roots": roots,
          "size": size,
          "channels": channels,
          "classes": class_names,
          "files": stat_keys,
      }
  )
  return ImageFolderConfig(
      name=f"{size[0]}x{size[1]}x{channels}-{digest}",
      version=ImageFolder.VERSION,
      description=f"image_folder over {roots}, resized to {size}, {channels} channel(s).",
      roots=roots,
      image_size=size,
      channels=channels,
      class_names=class_names,
      files=files,
  )


def load_image(path: str, image_size: tuple[int, int], channels: int) -> np.ndarray:
  """Decodes one file as uint8 [H, W, channels] (bilinear resize, no crop)."""
  from PIL import Image  # pylint: disable=g-import-not-at-top

  with Image.open(path) as img:
    img = img.convert("RGB" if channels == 3 else "L")
    h, w = image_size
    if img.size != (w, h):
      img = img.resize((w, h), Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
  if arr.ndim == 2:
    arr = arr[..., None]
  return arr


def _encode_png(arr: np.ndarray) -> bytes:
  from PIL import Image  # pylint: disable=g-import-not-at-top

  buf = io.BytesIO()
  Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr).save(buf, format="PNG")
  return buf.getvalue()


class ImageFolder(
    common.ShippedBuilderMixin,
    tfds.core.GeneratorBasedBuilder,
    skip_registration=common.already_registered(_NAME),
):
  """One sub-folder per class; images resized to a fixed size."""

  name = _NAME
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}

  def __init__(
      self,
      *,
      root_dir: Any = None,
      image_size: Any = 32,
      channels: int = 3,
      config: ImageFolderConfig | None = None,
      **kwargs,
  ):
    """Builder over `root_dir`.

    Args:
      root_dir: a directory with one sub-folder per class (split `train`), or
        `{split: directory}`. Required unless `config` is given.
      image_size: int or (H, W) of the stored images.
      channels: 3 (RGB) or 1 (grayscale).
      config: a ready `ImageFolderConfig` (from `make_config`) instead of the
        three options above.
      **kwargs: `tfds.core.DatasetBuilder` arguments (`data_dir`, ...).
    """
    if config is None:
      if root_dir is None:
        raise ValueError("image_folder needs root_dir=<directory with one sub-folder per class>.")
      config = make_config(root_dir, image_size, channels)
    elif not isinstance(config, ImageFolderConfig):
      raise TypeError(f"config must be an ImageFolderConfig, got {type(config).__name__}.")
    super().__init__(config=config, **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    cfg: ImageFolderConfig = self.builder_config
    h, w = cfg.image_size
    return common.make_info(
        self,
        description=(
            "Images from one sub-folder per class (labels = sorted folder names), "
            f"resized to {h}x{w} with bilinear interpolation, {cfg.channels} channel(s), "
            "stored as PNG. Examples in sorted relative-path order."
        ),
        features=tfds.features.FeaturesDict(
            {
                "image": tfds.features.Image(shape=(h, w, cfg.channels), encoding_format="png"),
                "label": tfds.features.ClassLabel(names=list(cfg.class_names)),
                "file_name": tfds.features.Text(),
            }
        ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    cfg: ImageFolderConfig = self.builder_config
    k = len(cfg.class_names)
    common.set_label_counts(
        self, {s: common.count_labels([lab for _, lab in e], k) for s, e in cfg.files.items()}
    )
    return {s: self._generate_examples(cfg.roots[s], e) for s, e in cfg.files.items()}

  def _generate_examples(self, root, entries):
    cfg: ImageFolderConfig = self.builder_config
    for i, (rel, label) in enumerate(entries):
      arr = load_image(os.path.join(root, rel), cfg.image_size, cfg.channels)
      yield i, {"image": _encode_png(arr), "label": label, "file_name": rel}
