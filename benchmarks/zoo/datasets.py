"""Offline, procedural source and target datasets for the benchmark model zoo.

The zoo pre-trains small models on SOURCE datasets and fine-tunes them on
TARGET tasks; transferability scores are judged by how well they predict the
fine-tuned accuracies.  Everything here is generated offline from a seed with
numpy, Pillow and the fonts matplotlib ships (plus system fonts, see below),
except ``digits``, which is scikit-learn's bundled copy of the UCI
handwritten digits.  Nothing is downloaded.  The digits target, its split
and the ``Dataset`` format live in the package (``face_jax.data.targets``,
which ``scripts/score.py`` scores the zoo on); this module re-exports them.

Synopsis::

    from benchmarks.zoo import datasets

    splits = datasets.load("glyphs", cache_dir="/tmp/zoo_cache")   # builds once, then reads .npz
    x, y, class_names = splits["train"]          # uint8 [N, 32, 32, 1], int32 [N], tuple[str]
    datasets.save_preview(splits["train"], "/tmp/glyphs.png")

    python -m benchmarks.zoo.datasets describe
    python -m benchmarks.zoo.datasets preview --out /tmp/previews
    python -m benchmarks.zoo.datasets build --cache-dir /tmp/zoo_cache

Input format (the same for every dataset): ``images`` are uint8
``[N, 32, 32, 1]`` grayscale (one channel; 0 = black, 255 = white), ``labels``
are int32 ``[N]`` in ``[0, K)`` and ``class_names`` is a tuple of K strings.
Glyphs and digits are bright ink on a dark background (sklearn's convention);
shapes have random polarity; textures are bright/dark patterns.  Models should
take ``images.astype(float32) / 255`` (replicate the channel if a model wants
RGB).

Datasets (``REGISTRY``; per-class split sizes are the defaults):

======== ====== ================================================ ===== ==========================
name     role   content                                            K   train / val / test
======== ====== ================================================ ===== ==========================
glyphs   source Latin letters, case merged (A and a are class A;    26  270 / 30 / - per class
                lower-case l is left out: it equals upper-case I
                in sans fonts), rendered in the SOURCE fonts
shapes   source filled shapes: circle ring ellipse triangle         10  720 / 80 / - per class
                square star cross crescent heart arrow
digits   target scikit-learn ``load_digits`` (1797 handwritten     10  stratified 55% / 15% / 30%
                8x8 digits), resized to 32x32                             (989 / 269 / 539)
greek    target Greek lower-case letters alpha..omega (no final     24  60 / 20 / 40 per class
                sigma) rendered in HELD-OUT fonts
textures target stripes at 0/45/90/135 degrees, checker, dots,      8  150 / 50 / 100 per class
                concentric rings, blobs (low-pass noise)
======== ====== ================================================ ===== ==========================

Disjointness: ``glyphs`` and ``greek`` share no class, no code point and no
font; ``glyphs`` and ``digits`` share no class (no digit is a source glyph);
``shapes`` and ``textures`` share no class.

Fonts.  ``discover_fonts`` collects TrueType/OpenType faces from matplotlib's
``mpl-data/fonts/ttf`` and ``/usr/share/fonts``, ``/usr/local/share/fonts``,
deduplicated by (family, style).  Symbol and fallback faces (cmsy10, cmex10,
STIX NonUnicode / Size*, Last Resort, DejaVu *Display) are excluded.  A face
is HELD OUT (used only by ``greek``) if it is one of ``HELDOUT_FACES``
(STIXGeneral, DejaVu Serif Condensed, DejaVu Sans ExtraLight, DejaVu Math TeX
Gyre); every other face is a SOURCE face (used only by ``glyphs``).  A face is
used for a character set only if its character map covers every character
and the rendered glyphs are non-empty and pairwise distinct.  On this
project's machine that gives 22 source faces and 10 held-out faces; on a
machine with other system fonts the sets (and so the bytes) differ: the font
list is recorded in every cache file's metadata and in ``describe()``.

Rendering (glyphs, greek).  Each (face, character) is rendered once at 128
px, cropped to its ink box, then drawn per example on a 128x128 canvas (4x
supersampling) through one random affine map (rotation +-12 deg, ink box max
side 0.72 * canvas times U(0.8, 1.05), aspect exp(U(-0.15, 0.15)), shear
U(-0.2, 0.2), shift +-2.5 px at 32x32) with bilinear resampling, thickened
(p = 0.25, 5x5 grey dilation) or thinned (p = 0.15, 3x3 erosion), box-averaged
to 32x32, mapped to background U(0, 60) and ink U(180, 255) grey levels, and
given Gaussian noise with sigma U(0, 12) grey levels.

Determinism: every builder draws from ``numpy.random.default_rng(seed)`` in a
fixed order, so the same seed, sizes, fonts and Pillow version give the same
bytes.  ``GENERATOR_VERSION`` is part of the cache key; bump it whenever the
output of a builder changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import glob
import hashlib
import json
import math
import os
import sys
import tempfile
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from face_jax.data import targets
from face_jax.data.targets import CHANNELS
from face_jax.data.targets import Dataset
from face_jax.data.targets import IMAGE_SIZE
from face_jax.data.targets import load_digits_32
from face_jax.data.targets import split_counts
from face_jax.data.targets import stratified_split
from face_jax.data.targets import to_uint8

GENERATOR_VERSION = 1

_SUPER = 4  # supersampling factor for rendering
_HI = IMAGE_SIZE * _SUPER  # 128: rendering canvas side


def _check_dataset(ds: Dataset, what: str) -> None:
  if (
      ds.images.dtype != np.uint8
      or ds.images.ndim != 4
      or ds.images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
  ):
    raise ValueError(
        f"{what}: images must be uint8 [N, 32, 32, 1], got " f"{ds.images.dtype} {ds.images.shape}."
    )
  if ds.labels.shape != (ds.images.shape[0],):
    raise ValueError(f"{what}: labels must be [N], got {ds.labels.shape}.")
  if ds.labels.size and (ds.labels.min() < 0 or ds.labels.max() >= len(ds.class_names)):
    raise ValueError(f"{what}: labels out of range [0, {len(ds.class_names)}).")


# ---------------------------------------------------------------------------
# Fonts.


@dataclasses.dataclass(frozen=True)
class FontFace:
  """A font file and its face names."""

  path: str
  family: str
  style: str

  @property
  def name(self) -> str:
    return f"{self.family} {self.style}"


def _matplotlib_font_dir() -> str:
  import matplotlib

  return os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")


DEFAULT_FONT_DIRS: tuple[str, ...] = (
    _matplotlib_font_dir(),
    "/usr/share/fonts",
    "/usr/local/share/fonts",
)

# Faces that map letters to symbols, or draw the same placeholder for every
# character.  Matched as prefixes of the family name.
_EXCLUDED_FAMILY_PREFIXES = (
    "cmsy",
    "cmex",
    "Last Resort",
    "STIXNonUnicode",
    "STIXSize",
    "DejaVu Sans Display",
    "DejaVu Serif Display",
)

# (family, style prefix) of the faces held out from the sources; "" matches
# any style.
HELDOUT_FACES: tuple[tuple[str, str], ...] = (
    ("STIXGeneral", ""),
    ("DejaVu Serif", "Condensed"),
    ("DejaVu Sans", "ExtraLight"),
    ("DejaVu Math TeX Gyre", ""),
)


@functools.cache
def discover_fonts(font_dirs: tuple[str, ...] = DEFAULT_FONT_DIRS) -> tuple[FontFace, ...]:
  """All usable TrueType/OpenType faces under ``font_dirs``, deduplicated.

  Args:
    font_dirs: directories searched recursively for ``*.ttf`` / ``*.otf``;
      for a (family, style) found twice the first directory wins.

  Returns:
    Faces sorted by name, symbol/fallback faces excluded.
  """
  from matplotlib import ft2font

  seen: dict[tuple[str, str], FontFace] = {}
  for d in font_dirs:
    if not os.path.isdir(d):
      continue
    paths = sorted(
        glob.glob(os.path.join(d, "**", "*.ttf"), recursive=True)
        + glob.glob(os.path.join(d, "**", "*.otf"), recursive=True)
    )
    for p in paths:
      try:
        f = ft2font.FT2Font(p)
      except (OSError, RuntimeError, ValueError):
        continue
      key = (f.family_name, f.style_name)
      if key in seen or any(f.family_name.startswith(x) for x in _EXCLUDED_FAMILY_PREFIXES):
        continue
      seen[key] = FontFace(path=p, family=f.family_name, style=f.style_name)
  return tuple(sorted(seen.values(), key=lambda ff: ff.name))


def is_heldout(face: FontFace) -> bool:
  """Whether ``face`` is reserved for the target glyph task (``HELDOUT_FACES``)."""
  return any(face.family == fam and face.style.startswith(sty) for fam, sty in HELDOUT_FACES)


@functools.cache
def _face_supports(path: str, chars: str) -> bool:
  """Character map covers ``chars`` and glyphs are non-empty and pairwise distinct."""
  from matplotlib import ft2font

  cmap = ft2font.FT2Font(path).get_charmap()
  if any(ord(c) not in cmap for c in chars):
    return False
  font = ImageFont.truetype(path, 40)
  seen = set()
  for c in chars:
    im = Image.new("L", (80, 80), 0)
    ImageDraw.Draw(im).text((20, 10), c, font=font, fill=255)
    b = im.tobytes()
    if im.getbbox() is None or b in seen:
      return False
    seen.add(b)
  return True


def glyph_fonts(role: str, chars: str) -> tuple[FontFace, ...]:
  """The faces used for a glyph dataset.

  Args:
    role: "source" (not held out) or "heldout".
    chars: every character the dataset draws.

  Returns:
    Faces of that role supporting all of ``chars`` (see ``_face_supports``).

  Raises:
    RuntimeError: no such face on this machine.
  """
  if role not in ("source", "heldout"):
    raise ValueError(f"role must be 'source' or 'heldout', got {role!r}.")
  want_heldout = role == "heldout"
  faces = tuple(
      f for f in discover_fonts() if is_heldout(f) == want_heldout and _face_supports(f.path, chars)
  )
  if not faces:
    raise RuntimeError(f"No {role} font supports {chars!r}; searched {DEFAULT_FONT_DIRS}.")
  return faces


# ---------------------------------------------------------------------------
# Shared rendering helpers.


def _box_down(hi: Image.Image) -> np.ndarray:
  """Box-averages a 128x128 'L' image to 32x32 float in [0, 1]."""
  return np.asarray(hi.reduce(_SUPER), dtype=np.float32) / 255.0


def _morph(
    a: np.ndarray, size: int, op: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> np.ndarray:
  """Grey dilation (op=np.maximum) or erosion (np.minimum) with a size x size square.

  Separable, edge-replicated; equals Pillow's MaxFilter/MinFilter(size).

  Args:
    a: [H, W] image.
    size: odd window side.
    op: np.maximum or np.minimum.

  Returns:
    [H, W] filtered image.
  """
  r = size // 2
  h, w = a.shape
  p = np.pad(a, ((r, r), (0, 0)), mode="edge")
  out = p[0:h]
  for k in range(1, size):
    out = op(out, p[k : k + h])
  p = np.pad(out, ((0, 0), (r, r)), mode="edge")
  out = p[:, 0:w]
  for k in range(1, size):
    out = op(out, p[:, k : k + w])
  return out


def _affine_inverse_coeffs(m: np.ndarray) -> tuple[float, ...]:
  """PIL AFFINE data (output -> input) for a forward 3x3 map input -> output."""
  inv = np.linalg.inv(m)
  return tuple(float(v) for v in inv[:2].ravel())


def _balanced_labels(rng: np.random.Generator, k: int, n_per_class: int) -> np.ndarray:
  labels = np.repeat(np.arange(k, dtype=np.int32), n_per_class)
  return labels[rng.permutation(labels.size)]


# ---------------------------------------------------------------------------
# Glyphs (source "glyphs", target "greek").

# Case-merged Latin letters; lower-case l is left out (identical to upper-case
# I in sans-serif faces, so it would make the labels ambiguous).
LETTER_CLASSES: tuple[tuple[str, str], ...] = tuple(
    (c, c + c.lower() if c != "L" else c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

GREEK_NAMES = (
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "chi",
    "psi",
    "omega",
)
# U+03B1..U+03C9 without final sigma U+03C2.
GREEK_CLASSES: tuple[tuple[str, str], ...] = tuple(
    (name, ch) for name, ch in zip(GREEK_NAMES, [chr(c) for c in range(0x3B1, 0x3CA) if c != 0x3C2])
)


class _GlyphCache:
  """Per-(face, char) ink crops rendered at 128 px, built lazily."""

  def __init__(self):
    self._fonts: dict[str, ImageFont.FreeTypeFont] = {}
    self._crops: dict[tuple[str, str], Image.Image] = {}

  def get(self, face: FontFace, ch: str) -> Image.Image:
    key = (face.path, ch)
    if key not in self._crops:
      font = self._fonts.get(face.path)
      if font is None:
        font = self._fonts[face.path] = ImageFont.truetype(face.path, _HI)
      l, t, r, b = font.getbbox(ch)
      pad = 8
      im = Image.new("L", (r - l + 2 * pad, b - t + 2 * pad), 0)
      ImageDraw.Draw(im).text((pad - l, pad - t), ch, font=font, fill=255)
      box = im.getbbox()
      if box is None:
        raise RuntimeError(f"Empty glyph {ch!r} in {face.name}.")
      self._crops[key] = im.crop(box)
    return self._crops[key]


def _render_glyph(rng: np.random.Generator, crop: Image.Image) -> np.ndarray:
  """One jittered 32x32 glyph, float grey levels (see module docstring)."""
  w, h = crop.size
  theta = math.radians(rng.uniform(-12.0, 12.0))
  scale = 0.72 * _HI / max(w, h) * rng.uniform(0.8, 1.05)
  aspect = math.exp(rng.uniform(-0.15, 0.15))
  shear = rng.uniform(-0.2, 0.2)
  shift = rng.uniform(-2.5, 2.5, size=2) * _SUPER
  to_origin = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1]], dtype=np.float64)
  scale_m = np.diag([scale * math.sqrt(aspect), scale / math.sqrt(aspect), 1.0])
  shear_m = np.array([[1, shear, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64)
  c, s = math.cos(theta), math.sin(theta)
  rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)
  to_canvas = np.array([[1, 0, _HI / 2 + shift[0]], [0, 1, _HI / 2 + shift[1]], [0, 0, 1]])
  m = to_canvas @ rot @ shear_m @ scale_m @ to_origin
  hi = crop.transform(
      (_HI, _HI),
      Image.Transform.AFFINE,
      _affine_inverse_coeffs(m),
      resample=Image.Resampling.BILINEAR,
      fillcolor=0,
  )
  u = rng.uniform()
  if u < 0.25:  # thicker strokes (+0.5 px per side at 32x32)
    hi = Image.fromarray(_morph(np.asarray(hi), 5, np.maximum))
  elif u < 0.40:  # thinner strokes
    hi = Image.fromarray(_morph(np.asarray(hi), 3, np.minimum))
  alpha = _box_down(hi)
  bg = rng.uniform(0.0, 60.0)
  ink = rng.uniform(180.0, 255.0)
  sigma = rng.uniform(0.0, 12.0)
  return bg + (ink - bg) * alpha + sigma * rng.standard_normal(alpha.shape)


def _make_glyph_dataset(
    classes: Sequence[tuple[str, str]], faces: Sequence[FontFace], n_per_class: int, seed: int
) -> Dataset:
  _check_n(n_per_class)
  rng = np.random.default_rng(seed)
  labels = _balanced_labels(rng, len(classes), n_per_class)
  cache = _GlyphCache()
  images = np.empty((labels.size, IMAGE_SIZE, IMAGE_SIZE, CHANNELS), np.uint8)
  for i, k in enumerate(labels):
    chars = classes[k][1]
    ch = chars[rng.integers(len(chars))]
    face = faces[rng.integers(len(faces))]
    images[i, :, :, 0] = to_uint8(_render_glyph(rng, cache.get(face, ch)))
  return Dataset(images, labels, tuple(name for name, _ in classes))


def _chars(classes: Sequence[tuple[str, str]]) -> str:
  return "".join(chars for _, chars in classes)


def make_glyphs(n_per_class: int, seed: int = 0) -> Dataset:
  """Source 1: case-merged Latin letters (26 classes) in the source fonts.

  Args:
    n_per_class: examples per class.
    seed: generator seed.

  Returns:
    ``Dataset`` with N = 26 * n_per_class, labels in random order.
  """
  return _make_glyph_dataset(
      LETTER_CLASSES, glyph_fonts("source", _chars(LETTER_CLASSES)), n_per_class, seed
  )


def make_greek(n_per_class: int, seed: int = 0) -> Dataset:
  """Target 2: Greek lower-case letters (24 classes) in the held-out fonts.

  Args:
    n_per_class: examples per class.
    seed: generator seed.

  Returns:
    ``Dataset`` with N = 24 * n_per_class.
  """
  return _make_glyph_dataset(
      GREEK_CLASSES, glyph_fonts("heldout", _chars(GREEK_CLASSES)), n_per_class, seed
  )


# ---------------------------------------------------------------------------
# Shapes (source "shapes").

SHAPE_CLASSES = (
    "circle",
    "ring",
    "ellipse",
    "triangle",
    "square",
    "star",
    "cross",
    "crescent",
    "heart",
    "arrow",
)


def _rotate(pts: np.ndarray, theta: float) -> np.ndarray:
  c, s = math.cos(theta), math.sin(theta)
  return pts @ np.array([[c, s], [-s, c]])


def _regular(n: int, radii: np.ndarray | float, theta0: float) -> np.ndarray:
  a = theta0 + 2 * math.pi * np.arange(n) / n
  r = np.broadcast_to(radii, a.shape)
  return np.stack([r * np.cos(a), r * np.sin(a)], axis=1)


def _shape_polygons(rng: np.random.Generator, name: str) -> list[tuple[np.ndarray, int]]:
  """Polygons in unit coordinates (radius ~1), with fill 255 (add) or 0 (cut)."""
  theta = rng.uniform(0.0, 2 * math.pi)
  if name == "circle":
    return [(_regular(96, 1.0, 0.0), 255)]
  if name == "ring":
    return [(_regular(96, 1.0, 0.0), 255), (_regular(96, rng.uniform(0.5, 0.68), 0.0), 0)]
  if name == "ellipse":
    p = _regular(96, 1.0, 0.0) * np.array([1.0, rng.uniform(0.35, 0.55)])
    return [(_rotate(p, theta), 255)]
  if name == "triangle":
    return [(_regular(3, rng.uniform(0.92, 1.08, 3), theta), 255)]
  if name == "square":
    return [(_regular(4, 0.95, theta), 255)]
  if name == "star":
    inner = rng.uniform(0.38, 0.5)
    return [(_regular(10, np.tile([1.0, inner], 5), theta), 255)]
  if name == "cross":
    w = rng.uniform(0.25, 0.35)
    p = (
        np.array(
            [
                [w, w],
                [w, 1],
                [-w, 1],
                [-w, w],
                [-1, w],
                [-1, -w],
                [-w, -w],
                [-w, -1],
                [w, -1],
                [w, -w],
                [1, -w],
                [1, w],
            ]
        )
        * 0.95
    )
    return [(_rotate(p, theta), 255)]
  if name == "crescent":
    d = rng.uniform(0.4, 0.6)
    cut = _regular(96, rng.uniform(0.85, 0.95), 0.0) + d * np.array(
        [math.cos(theta), math.sin(theta)]
    )
    return [(_regular(96, 1.0, 0.0), 255), (cut, 0)]
  if name == "heart":
    t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    p = np.stack(
        [
            16 * np.sin(t) ** 3,
            13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t),
        ],
        1,
    )
    p = p / 17.0 * np.array([1.0, -1.0])  # image y axis points down
    p = p - p.mean(axis=0)
    return [(_rotate(p, theta), 255)]
  if name == "arrow":
    sw, hw, hl = rng.uniform(0.15, 0.22), rng.uniform(0.5, 0.65), rng.uniform(0.45, 0.6)
    p = np.array(
        [[-1, -sw], [1 - hl, -sw], [1 - hl, -hw], [1, 0], [1 - hl, hw], [1 - hl, sw], [-1, sw]]
    )
    return [(_rotate(p, theta), 255)]
  raise ValueError(name)


def _render_shape(rng: np.random.Generator, name: str) -> np.ndarray:
  radius = rng.uniform(0.28, 0.42) * _HI
  slack = _HI / 2 - radius
  center = _HI / 2 + rng.uniform(-0.6, 0.6, size=2) * slack
  hi = Image.new("L", (_HI, _HI), 0)
  draw = ImageDraw.Draw(hi)
  for pts, fill in _shape_polygons(rng, name):
    xy = pts * radius + center
    draw.polygon([tuple(p) for p in xy.tolist()], fill=fill)
  alpha = _box_down(hi)
  # Random polarity with contrast >= 80 grey levels, a linear gradient and noise.
  a, b = rng.uniform(0, 255, size=2)
  while abs(a - b) < 80:
    a, b = rng.uniform(0, 255, size=2)
  bg, fg = a, b
  yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE] / (IMAGE_SIZE - 1) - 0.5
  g = rng.uniform(-30, 30, size=2)
  background = bg + g[0] * xx + g[1] * yy
  sigma = rng.uniform(0.0, 12.0)
  return background + (fg - background) * alpha + sigma * rng.standard_normal(alpha.shape)


def make_shapes(n_per_class: int, seed: int = 0) -> Dataset:
  """Source 2: ten filled shape classes, random size/position/rotation/polarity.

  Radius U(0.28, 0.42) of the side, centre within 60% of the free margin,
  rotation uniform, grey levels with |fg - bg| >= 80, linear background
  gradient of up to +-30 levels, Gaussian noise sigma U(0, 12); polygons drawn
  at 4x and box-averaged.

  Args:
    n_per_class: examples per class.
    seed: generator seed.

  Returns:
    ``Dataset`` with N = 10 * n_per_class.
  """
  _check_n(n_per_class)
  rng = np.random.default_rng(seed)
  labels = _balanced_labels(rng, len(SHAPE_CLASSES), n_per_class)
  images = np.empty((labels.size, IMAGE_SIZE, IMAGE_SIZE, CHANNELS), np.uint8)
  for i, k in enumerate(labels):
    images[i, :, :, 0] = to_uint8(_render_shape(rng, SHAPE_CLASSES[k]))
  return Dataset(images, labels, SHAPE_CLASSES)


# ---------------------------------------------------------------------------
# Textures (target "textures").

TEXTURE_CLASSES = (
    "stripes_0",
    "stripes_45",
    "stripes_90",
    "stripes_135",
    "checker",
    "dots",
    "rings",
    "blobs",
)

_TEX_SUPER = 2  # textures are evaluated at 2x2 points per pixel and averaged


def _texture_pattern(rng: np.random.Generator, name: str) -> np.ndarray:
  """Pattern in [0, 1] on the 64x64 supersampled grid (x right, y up, pixel units at 32)."""
  n = IMAGE_SIZE * _TEX_SUPER
  coords = (np.arange(n) + 0.5) / _TEX_SUPER
  x = coords[None, :]
  y = (IMAGE_SIZE - coords)[:, None]  # y up, so angles read counter-clockwise on screen
  period = rng.uniform(4.0, 8.0)
  sharp = rng.uniform(1.0, 6.0)  # 1: sine-like profile, 6: nearly square wave

  def profile(v):
    return 0.5 + 0.5 * np.tanh(sharp * np.sin(v)) / math.tanh(sharp)

  if name.startswith("stripes_"):
    ang = math.radians(float(name.split("_")[1]) + rng.uniform(-10.0, 10.0))
    # Lines along direction ang: intensity varies along the normal.
    u = -math.sin(ang) * x + math.cos(ang) * y
    return profile(2 * math.pi * u / period + rng.uniform(0, 2 * math.pi)) * np.ones((n, n))
  ang = rng.uniform(0, 2 * math.pi)
  u = math.cos(ang) * x + math.sin(ang) * y
  v = -math.sin(ang) * x + math.cos(ang) * y
  ph = rng.uniform(0, 2 * math.pi, size=2)
  if name == "checker":
    return 0.5 + 0.5 * (2 * profile(2 * math.pi * u / period + ph[0]) - 1) * (
        2 * profile(2 * math.pi * v / period + ph[1]) - 1
    )
  if name == "dots":
    period = rng.uniform(5.0, 8.0)
    r = rng.uniform(0.15, 0.3) * period
    du = (u / period + ph[0] / (2 * math.pi)) % 1.0 - 0.5
    dv = (v / period + ph[1] / (2 * math.pi)) % 1.0 - 0.5
    dist = np.hypot(du, dv) * period
    return 0.5 + 0.5 * np.tanh((r - dist) * 2.0)
  if name == "rings":
    cx, cy = rng.uniform(0, IMAGE_SIZE, size=2)
    return profile(2 * math.pi * np.hypot(x - cx, y - cy) / period + ph[0])
  if name == "blobs":
    corr = rng.uniform(1.5, 3.0) * _TEX_SUPER
    noise = rng.standard_normal((n, n))
    f = np.fft.fftfreq(n)
    kernel = np.exp(-2 * (math.pi * corr) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    field = np.real(np.fft.ifft2(np.fft.fft2(noise) * kernel))
    field = field / (field.std() + 1e-12)  # 1e-12 only guards a zero field
    return 0.5 + 0.5 * np.tanh(sharp * field)
  raise ValueError(name)


def _render_texture(rng: np.random.Generator, name: str) -> np.ndarray:
  p = _texture_pattern(rng, name)
  p = p.reshape(IMAGE_SIZE, _TEX_SUPER, IMAGE_SIZE, _TEX_SUPER).mean(axis=(1, 3))
  mid = rng.uniform(90, 165)
  contrast = rng.uniform(60, 180)
  sigma = rng.uniform(0.0, 20.0)
  return mid + contrast * (p - 0.5) + sigma * rng.standard_normal(p.shape)


def make_textures(n_per_class: int, seed: int = 0) -> Dataset:
  """Target 3: eight texture classes.

  Stripes at 0/45/90/135 degrees (orientation of the lines, counter-clockwise
  from horizontal as displayed, +-10 deg jitter), checker, dot lattice
  (random rotation), concentric rings (random centre), blobs (Gaussian
  low-pass noise, correlation length 1.5-3 px).  Period U(4, 8) px, profile
  from sine to square wave, mean U(90, 165), contrast U(60, 180), Gaussian
  noise sigma U(0, 20); 2x2 supersampled.

  Args:
    n_per_class: examples per class.
    seed: generator seed.

  Returns:
    ``Dataset`` with N = 8 * n_per_class.
  """
  _check_n(n_per_class)
  rng = np.random.default_rng(seed)
  labels = _balanced_labels(rng, len(TEXTURE_CLASSES), n_per_class)
  images = np.empty((labels.size, IMAGE_SIZE, IMAGE_SIZE, CHANNELS), np.uint8)
  for i, k in enumerate(labels):
    images[i, :, :, 0] = to_uint8(_render_texture(rng, TEXTURE_CLASSES[k]))
  return Dataset(images, labels, TEXTURE_CLASSES)


# ---------------------------------------------------------------------------
# Splits, registry, cache.


def _check_n(n: int) -> None:
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"n_per_class must be a positive int, got {n!r}.")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How to build one registry dataset and its splits."""

  name: str
  role: str  # "source" or "target"
  builder: Callable[..., Dataset]  # (n_per_class, seed) -> Dataset, or () -> Dataset
  per_class: Mapping[str, int] | None  # split sizes per class (procedural datasets)
  fractions: Mapping[str, float] | None  # split fractions (fixed datasets)
  seed: int  # default generation seed
  description: str

  @property
  def procedural(self) -> bool:
    return self.per_class is not None


REGISTRY: dict[str, DatasetSpec] = {
    "glyphs": DatasetSpec(
        "glyphs",
        "source",
        make_glyphs,
        {"train": 270, "val": 30},
        None,
        101,
        "case-merged Latin letters in source fonts",
    ),
    "shapes": DatasetSpec(
        "shapes", "source", make_shapes, {"train": 720, "val": 80}, None, 202, "filled shapes"
    ),
    "digits": DatasetSpec(
        "digits",
        "target",
        load_digits_32,
        None,
        targets.DIGITS_FRACTIONS,
        targets.DIGITS_SEED,
        "scikit-learn handwritten digits, 8x8 -> 32x32 bilinear",
    ),
    "greek": DatasetSpec(
        "greek",
        "target",
        make_greek,
        {"train": 60, "val": 20, "test": 40},
        None,
        404,
        "Greek lower-case letters in held-out fonts",
    ),
    "textures": DatasetSpec(
        "textures",
        "target",
        make_textures,
        {"train": 150, "val": 50, "test": 100},
        None,
        505,
        "stripes/checker/dots/rings/blobs textures",
    ),
}
SOURCES = tuple(n for n, s in REGISTRY.items() if s.role == "source")
TARGETS = tuple(n for n, s in REGISTRY.items() if s.role == "target")


def _spec(name: str) -> DatasetSpec:
  if name not in REGISTRY:
    raise KeyError(f"Unknown dataset {name!r}; known: {sorted(REGISTRY)}.")
  return REGISTRY[name]


def dataset_meta(
    name: str, seed: int | None = None, per_class: Mapping[str, int] | None = None
) -> dict[str, Any]:
  """The parameters that determine a built dataset (its cache key)."""
  import PIL

  spec = _spec(name)
  meta: dict[str, Any] = {
      "name": name,
      "role": spec.role,
      "generator_version": GENERATOR_VERSION,
      "seed": spec.seed if seed is None else int(seed),
      "image_shape": [IMAGE_SIZE, IMAGE_SIZE, CHANNELS],
      "pillow": PIL.__version__,
  }
  if spec.procedural:
    meta["per_class"] = dict(per_class if per_class is not None else spec.per_class)
  else:
    if per_class is not None:
      raise ValueError(f"{name} is a fixed dataset; its split is given by fractions.")
    meta["fractions"] = dict(spec.fractions)
  if name == "glyphs":
    meta["fonts"] = [f.name for f in glyph_fonts("source", _chars(LETTER_CLASSES))]
  elif name == "greek":
    meta["fonts"] = [f.name for f in glyph_fonts("heldout", _chars(GREEK_CLASSES))]
  return meta


def build(
    name: str, *, seed: int | None = None, per_class: Mapping[str, int] | None = None
) -> dict[str, Dataset]:
  """Generates a registry dataset and splits it (no cache).

  Args:
    name: one of ``REGISTRY``.
    seed: generation and split seed (default: the registry's).
    per_class: split sizes per class (procedural datasets only); default
      the registry's.

  Returns:
    split name -> ``Dataset``: "train"/"val" for sources,
    "train"/"val"/"test" for targets.
  """
  spec = _spec(name)
  meta = dataset_meta(name, seed, per_class)
  s = meta["seed"]
  if spec.procedural:
    sizes = meta["per_class"]
    full = spec.builder(sum(sizes.values()), seed=s)
    return stratified_split(full, sizes, seed=s)
  return stratified_split(spec.builder(), fractions=spec.fractions, seed=s)


def save_npz(
    path: str | os.PathLike[str], splits: Mapping[str, Dataset], meta: Mapping[str, Any]
) -> str:
  """Writes splits and metadata to one compressed .npz (atomically).

  Layout: ``<split>/images`` uint8 [N, 32, 32, 1], ``<split>/labels`` int32
  [N], ``class_names`` str [K], ``meta`` JSON string.
  """
  if not splits:
    raise ValueError("save_npz: no splits.")
  arrays: dict[str, np.ndarray] = {}
  names = None
  for s, ds in splits.items():
    _check_dataset(ds, s)
    arrays[f"{s}/images"] = ds.images
    arrays[f"{s}/labels"] = ds.labels.astype(np.int32)
    if names is not None and ds.class_names != names:
      raise ValueError("All splits must have the same class names.")
    names = ds.class_names
  arrays["class_names"] = np.asarray(names, dtype=str)
  arrays["meta"] = np.asarray(json.dumps(dict(meta), sort_keys=True))
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".npz")
  os.close(fd)
  try:
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return path


def load_npz(path: str | os.PathLike[str]) -> tuple[dict[str, Dataset], dict[str, Any]]:
  """Reads a file written by ``save_npz``: (splits, meta)."""
  with np.load(os.fspath(path), allow_pickle=False) as z:
    names = tuple(str(c) for c in z["class_names"])
    meta = json.loads(str(z["meta"]))
    splits = {}
    for key in z.files:
      if key.endswith("/images"):
        s = key[: -len("/images")]
        splits[s] = Dataset(z[key], z[f"{s}/labels"], names)
  return splits, meta


def cache_path(cache_dir: str | os.PathLike[str], meta: Mapping[str, Any]) -> str:
  """``<cache_dir>/<name>_<hash of meta>.npz``."""
  digest = hashlib.sha256(json.dumps(dict(meta), sort_keys=True).encode()).hexdigest()[:12]
  return os.path.join(os.fspath(cache_dir), f"{meta['name']}_{digest}.npz")


def load(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int | None = None,
    per_class: Mapping[str, int] | None = None,
) -> dict[str, Dataset]:
  """Like ``build``, but reads/writes an .npz cache keyed by ``dataset_meta``.

  Args:
    name: one of ``REGISTRY``.
    cache_dir: cache directory; None builds without caching.
    seed: see ``build``.
    per_class: see ``build``.

  Returns:
    split name -> ``Dataset``.
  """
  if cache_dir is None:
    return build(name, seed=seed, per_class=per_class)
  meta = dataset_meta(name, seed, per_class)
  path = cache_path(cache_dir, meta)
  if os.path.exists(path):
    splits, stored = load_npz(path)
    if stored == meta:
      return splits
  splits = build(name, seed=seed, per_class=per_class)
  save_npz(path, splits, meta)
  return splits


# ---------------------------------------------------------------------------
# Preview, description, CLI.


def save_preview(
    ds: Dataset,
    path: str | os.PathLike[str],
    *,
    per_class: int = 10,
    max_classes: int = 26,
    title: str | None = None,
) -> str:
  """Writes a PNG grid: one row per class (up to ``max_classes``), ``per_class`` examples.

  Returns:
    The path written.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  _check_dataset(ds, "save_preview")
  k = min(len(ds.class_names), max_classes)
  gap = 2
  cell = IMAGE_SIZE + gap
  mosaic = np.full((k * cell, per_class * cell), 128, np.uint8)
  for c in range(k):
    idx = np.flatnonzero(ds.labels == c)[:per_class]
    for j, i in enumerate(idx):
      mosaic[c * cell : c * cell + IMAGE_SIZE, j * cell : j * cell + IMAGE_SIZE] = ds.images[
          i, :, :, 0
      ]
  fig = Figure(figsize=(per_class * 0.45 + 1.6, k * 0.45 + 0.6), dpi=100)
  FigureCanvasAgg(fig)
  ax = fig.add_axes((0.2, 0.02, 0.78, 0.9 if title else 0.96))
  ax.imshow(mosaic, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
  ax.set_yticks([c * cell + IMAGE_SIZE / 2 for c in range(k)])
  ax.set_yticklabels(ds.class_names[:k], fontsize=8)
  ax.set_xticks([])
  if title:
    ax.set_title(title, fontsize=9)
  path = os.fspath(path)
  fig.savefig(path, format="png")
  return path


def describe() -> dict[str, Any]:
  """Sizes, classes and fonts of every registry dataset (without building them)."""
  out = {"image_format": f"uint8 [N, {IMAGE_SIZE}, {IMAGE_SIZE}, {CHANNELS}] grayscale"}
  for name, spec in REGISTRY.items():
    meta = dataset_meta(name)
    if name == "digits":
      from sklearn.datasets import load_digits

      names = targets.DIGITS_CLASSES
      class_sizes = np.bincount(load_digits().target, minlength=10)
      per_split = np.sum([split_counts(int(c), None, spec.fractions) for c in class_sizes], 0)
      sizes = dict(zip(spec.fractions, per_split.tolist()))
    else:
      names = {
          "glyphs": tuple(n for n, _ in LETTER_CLASSES),
          "shapes": SHAPE_CLASSES,
          "greek": tuple(n for n, _ in GREEK_CLASSES),
          "textures": TEXTURE_CLASSES,
      }[name]
      sizes = {s: c * len(names) for s, c in spec.per_class.items()}
    out[name] = {
        "role": spec.role,
        "description": spec.description,
        "classes": list(names),
        "num_classes": len(names),
        "split_sizes": sizes,
        **meta,
    }
  return out


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m benchmarks.zoo.datasets", description=__doc__.splitlines()[0]
  )
  sub = parser.add_subparsers(dest="cmd", required=True)
  p = sub.add_parser("preview", help="write <out>/<name>.png grids of the train splits")
  p.add_argument("--out", required=True)
  p.add_argument("--names", nargs="*", default=list(REGISTRY))
  p.add_argument("--per-class", type=int, default=10)
  b = sub.add_parser("build", help="build and cache every dataset as .npz")
  b.add_argument("--cache-dir", required=True)
  b.add_argument("--names", nargs="*", default=list(REGISTRY))
  sub.add_parser("describe", help="print sizes, classes and fonts as JSON")
  args = parser.parse_args(argv)
  if args.cmd == "describe":
    print(json.dumps(describe(), indent=1))
    return 0
  for name in args.names:
    if args.cmd == "preview":
      os.makedirs(args.out, exist_ok=True)
      spec = _spec(name)
      if spec.procedural:  # small build: only what the grid shows
        ds = spec.builder(args.per_class, seed=spec.seed)
      else:
        ds = build(name)["train"]
      path = save_preview(
          ds,
          os.path.join(args.out, f"{name}.png"),
          per_class=args.per_class,
          title=f"{name} ({spec.role})",
      )
    else:
      splits = load(name, cache_dir=args.cache_dir)
      path = cache_path(args.cache_dir, dataset_meta(name))
      print(name, {s: d.images.shape[0] for s, d in splits.items()}, end=" ")
    print(path)
  return 0


if __name__ == "__main__":
  sys.exit(main())
