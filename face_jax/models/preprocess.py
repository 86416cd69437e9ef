"""Input preprocessing owned by each preset: host-side validation / tokenisation and device-side
image transforms (inside the jitted feature function).

Images (host): uint8 [N, H, W, C], C in {1, 3}; passed through unchanged.
Images (device, `preprocess_images`): uint8 -> float32 in [0, 1]; channel matching (grey -> RGB by
repetition, RGB -> grey by ITU-R BT.601 luma 0.299 R + 0.587 G + 0.114 B); resize; center crop;
per-channel (x - mean) / std.

Resize modes:
  "crop"   (torchvision eval transform): scale so that the image covers the target with a margin
           of 1 / crop_fraction (for a square target of side S: shorter side -> floor(S /
           crop_fraction), longer side in proportion), then center-crop to the target.
           ImageNet presets: 224 target, crop_fraction 0.875 -> resize 256, crop 224.
  "squash" resize straight to the target (aspect ratio not kept, nothing cropped; keeps the full
           field of view, e.g. to align dense maps with segmentation labels).
Resizing is bilinear with antialiasing (jax.image.resize); an image already at the size it would
be resized to is not resampled.

Text (host, `TextTokenizer`): the model's own `tokenizers` tokenizer, truncated to `max_length`
tokens ([CLS] ... [SEP] kept, the middle cut) and right-padded with [PAD] (id 0, mask 0) to exactly
`max_length`, so every batch has the static shape [N, max_length].
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Small presets map [0, 1] to [-1, 1]; dataset-agnostic on purpose.
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)
# ITU-R BT.601 luma weights (as PIL's "L" conversion).
LUMA = (0.299, 0.587, 0.114)


@dataclasses.dataclass(frozen=True)
class ImagePreprocess:
  """Device-side image preprocessing of a preset.

  Attributes:
    size: (H, W) of the model input.
    channels: channels the model expects (1 or 3).
    mean, std: per-channel normalisation constants on the [0, 1] scale (length `channels`).
    crop_fraction: fraction of the resized image kept by the center crop ("crop" mode); 1.0 means
      resize-to-cover without margin.
    mode: "crop" or "squash" (see module docstring).
  """

  size: tuple[int, int]
  channels: int = 3
  mean: tuple[float, ...] = IMAGENET_MEAN
  std: tuple[float, ...] = IMAGENET_STD
  crop_fraction: float = 1.0
  mode: str = "crop"

  def __post_init__(self):
    if self.channels not in (1, 3):
      raise ValueError(f"channels must be 1 or 3, got {self.channels}")
    if len(self.mean) != self.channels or len(self.std) != self.channels:
      raise ValueError(f"mean/std need {self.channels} entries, got {self.mean}, {self.std}")
    if not 0.0 < self.crop_fraction <= 1.0:
      raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
    if self.mode not in ("crop", "squash"):
      raise ValueError(f"resize mode must be 'crop' or 'squash', got {self.mode!r}")
    if len(self.size) != 2 or min(self.size) < 1:
      raise ValueError(f"size must be (H, W) with positive entries, got {self.size}")

  def resized_shape(self, h: int, w: int) -> tuple[int, int]:
    """(H', W') an h x w input is resized to before the center crop."""
    th, tw = self.size
    if self.mode == "squash":
      return th, tw
    if th * w >= tw * h:  # height is the binding side (covers the target height first)
      nh = max(th, math.floor(th / self.crop_fraction))
      nw = max(tw, int(nh * w / h))
    else:
      nw = max(tw, math.floor(tw / self.crop_fraction))
      nh = max(th, int(nw * h / w))
    return nh, nw


def to_size(size) -> tuple[int, int]:
  """An int or (H, W) -> (H, W) of positive ints."""
  if isinstance(size, (int, np.integer)):
    size = (int(size), int(size))
  size = tuple(int(s) for s in size)
  if len(size) != 2 or min(size) < 1:
    raise ValueError(f"image_size must be a positive int or (H, W), got {size}")
  return size


def validate_images(images) -> np.ndarray:
  """Host-side check of an image batch.

  Args:
    images: uint8 array-like [N, H, W, C], C in {1, 3}.

  Returns:
    The batch as a numpy uint8 array (no copy when already one).

  Raises:
    TypeError: not uint8.
    ValueError: wrong rank or channel count, or an empty spatial size.
  """
  arr = np.asarray(images)
  if arr.dtype != np.uint8:
    raise TypeError(
        f"images must be uint8 [N, H, W, C], got dtype {arr.dtype}; convert with "
        "np.clip(x, 0, 255).astype(np.uint8) for images on the 0..255 scale"
    )
  if arr.ndim != 4:
    raise ValueError(
        f"images must have shape [N, H, W, C], got shape {arr.shape}"
        + ("; add a channel axis for grey images" if arr.ndim == 3 else "")
    )
  if arr.shape[-1] not in (1, 3):
    raise ValueError(
        f"images must have 1 or 3 channels (NHWC), got C={arr.shape[-1]} "
        f"(shape {arr.shape}); channels-first input must be transposed"
    )
  if arr.shape[1] < 1 or arr.shape[2] < 1:
    raise ValueError(f"images have an empty spatial size: {arr.shape}")
  return arr


def preprocess_images(images: jax.Array, cfg: ImagePreprocess) -> jax.Array:
  """Device-side preprocessing (pure, jittable; shapes are static).

  Args:
    images: uint8 [B, H, W, C], C in {1, 3}.
    cfg: the preset's ImagePreprocess.

  Returns:
    float32 [B, cfg.size[0], cfg.size[1], cfg.channels], normalised.

  Raises:
    TypeError / ValueError at trace time on a wrong dtype / rank / channel count.
  """
  if images.dtype != jnp.uint8:
    raise TypeError(f"image batch must be uint8, got {images.dtype}")
  if images.ndim != 4 or images.shape[-1] not in (1, 3):
    raise ValueError(f"image batch must be [B, H, W, 1 or 3], got shape {images.shape}")
  x = images.astype(jnp.float32) / 255.0
  if x.shape[-1] == 3 and cfg.channels == 1:
    x = jnp.tensordot(x, jnp.asarray(LUMA, jnp.float32), axes=([-1], [0]))[..., None]
  b, h, w, c = x.shape
  nh, nw = cfg.resized_shape(h, w)
  if (nh, nw) != (h, w):
    x = jax.image.resize(x, (b, nh, nw, c), method="bilinear", antialias=True)
  th, tw = cfg.size
  if (nh, nw) != (th, tw):
    # torchvision CenterCrop offsets: round((size - crop) / 2).
    top = int(round((nh - th) / 2.0))
    left = int(round((nw - tw) / 2.0))
    x = x[:, top : top + th, left : left + tw, :]
  if c == 1 and cfg.channels == 3:
    x = jnp.repeat(x, 3, axis=-1)
  mean = jnp.asarray(cfg.mean, jnp.float32)
  std = jnp.asarray(cfg.std, jnp.float32)
  return (x - mean) / std


class TextTokenizer:
  """Wraps a `tokenizers.Tokenizer` with fixed-length truncation and padding.

  Args:
    tokenizer_file: path of a HF `tokenizer.json`.
    max_length: every encoding is truncated/padded to exactly this many tokens (incl. specials).
  """

  def __init__(self, tokenizer_file: str, max_length: int = 128):
    try:
      import tokenizers  # pylint: disable=g-import-not-at-top
    except ImportError as e:  # pragma: no cover - environment dependent
      raise ImportError(
          "text presets need the `tokenizers` package: pip install tokenizers "
          "(extra `face_jax[text]`)"
      ) from e
    if int(max_length) < 2:
      raise ValueError(f"max_length must be >= 2 ([CLS] and [SEP]), got {max_length}")
    self.max_length = int(max_length)
    tok = tokenizers.Tokenizer.from_file(str(tokenizer_file))
    pad_id = tok.token_to_id("[PAD]")
    tok.enable_truncation(max_length=self.max_length)
    tok.enable_padding(
        length=self.max_length, pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]"
    )
    self._tok = tok

  def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
    """texts -> {"input_ids": int32 [N, max_length], "attention_mask": int32 [N, max_length]}."""
    if isinstance(texts, (str, bytes)):
      raise TypeError("text input must be a sequence of strings; wrap a single string in a list")
    texts = list(texts)
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
      raise TypeError(
          f"text input must contain only str; items {bad[:5]} are "
          f"{type(texts[bad[0]]).__name__}"
      )
    if not texts:
      z = np.zeros((0, self.max_length), np.int32)
      return {"input_ids": z, "attention_mask": z.copy()}
    enc = self._tok.encode_batch(texts)
    ids = np.asarray([e.ids for e in enc], np.int32)
    mask = np.asarray([e.attention_mask for e in enc], np.int32)
    return {"input_ids": ids, "attention_mask": mask}
