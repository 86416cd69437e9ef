"""Tests for benchmarks.zoo.datasets: determinism, format, balance, disjointness, speed, cache."""

import hashlib
import os
import time

import numpy as np
import pytest

from benchmarks.zoo import datasets as D

_BUILDERS = {
    "glyphs": D.make_glyphs,
    "shapes": D.make_shapes,
    "greek": D.make_greek,
    "textures": D.make_textures,
}
_SMALL = {"train": 6, "val": 2, "test": 3}


def _sha(a):
  return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _check_format(ds, k):
  images, labels, names = ds  # unpacks as a triple
  assert images.dtype == np.uint8 and images.ndim == 4
  assert images.shape[1:] == (D.IMAGE_SIZE, D.IMAGE_SIZE, D.CHANNELS) == (32, 32, 1)
  assert labels.dtype == np.int32 and labels.shape == (images.shape[0],)
  assert isinstance(names, tuple) and len(names) == k and len(set(names)) == k
  assert labels.min() >= 0 and labels.max() < k


@pytest.mark.parametrize("name", sorted(_BUILDERS))
def test_builders_deterministic_and_formatted(name):
  make = _BUILDERS[name]
  a = make(4, seed=3)
  b = make(4, seed=3)
  c = make(4, seed=4)
  k = len(a.class_names)
  _check_format(a, k)
  assert a.images.shape[0] == 4 * k
  assert _sha(a.images) == _sha(b.images) and np.array_equal(a.labels, b.labels)
  assert _sha(a.images) != _sha(c.images)
  # Balanced classes, every image distinct, real contrast in every image.
  assert np.all(np.bincount(a.labels, minlength=k) == 4)
  assert len({im.tobytes() for im in a.images}) == a.images.shape[0]
  spread = a.images.reshape(a.images.shape[0], -1).astype(int)
  assert np.all(np.percentile(spread, 95, axis=1) - np.percentile(spread, 5, axis=1) > 40)


def test_registry_builds_splits_balanced_and_disjoint():
  for name, spec in D.REGISTRY.items():
    if not spec.procedural:
      continue
    sizes = {s: _SMALL[s] for s in spec.per_class}
    splits = D.build(name, per_class=sizes)
    again = D.build(name, per_class=sizes)
    assert list(splits) == list(spec.per_class)
    seen = set()
    for s, ds in splits.items():
      k = len(ds.class_names)
      _check_format(ds, k)
      assert np.all(np.bincount(ds.labels, minlength=k) == sizes[s]), (name, s)
      assert _sha(ds.images) == _sha(again[s].images)
      keys = {im.tobytes() for im in ds.images}
      assert not keys & seen, f"{name}: an image is in two splits"
      seen |= keys


def test_default_sizes_and_roles():
  desc = D.describe()
  assert desc["image_format"] == "uint8 [N, 32, 32, 1] grayscale"
  assert set(D.SOURCES) == {"glyphs", "shapes"}
  assert set(D.TARGETS) == {"digits", "greek", "textures"}
  assert desc["glyphs"]["num_classes"] == 26 and desc["glyphs"]["split_sizes"] == {
      "train": 7020,
      "val": 780,
  }
  assert desc["shapes"]["split_sizes"] == {"train": 7200, "val": 800}
  assert desc["greek"]["split_sizes"] == {"train": 1440, "val": 480, "test": 960}
  assert desc["textures"]["split_sizes"] == {"train": 1200, "val": 400, "test": 800}
  assert desc["digits"]["split_sizes"] == {"train": 989, "val": 269, "test": 539}
  for t in D.TARGETS:  # small enough to fine-tune many models on 2 cores
    assert 900 <= desc[t]["split_sizes"]["train"] <= 3000


def test_sklearn_digits_split_and_resize():
  from sklearn.datasets import load_digits

  full = D.load_digits_32()
  _check_format(full, 10)
  assert full.images.shape[0] == 1797
  orig = load_digits()
  assert np.array_equal(full.labels, orig.target)
  # Block means of the 32x32 image track the 8x8 original (bilinear resize).
  blocks = full.images[:, :, :, 0].reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4))
  ref = orig.images * 255.0 / 16.0
  corr = np.corrcoef(blocks.ravel(), ref.ravel())[0, 1]
  assert corr > 0.97
  assert abs(blocks.mean() - ref.mean()) < 3.0
  splits = D.build("digits")
  assert sum(ds.images.shape[0] for ds in splits.values()) == 1797
  counts = np.bincount(orig.target)
  for s, frac in D.REGISTRY["digits"].fractions.items():
    got = np.bincount(splits[s].labels, minlength=10)
    assert np.all(np.abs(got - frac * counts) <= 1.0), (s, got)


def test_stratified_split_partitions():
  n = 50
  images = np.zeros((n, 32, 32, 1), np.uint8)
  images[:, 0, 0, 0] = np.arange(n)  # each image encodes its index
  labels = (np.arange(n) % 3).astype(np.int32)
  ds = D.Dataset(images, labels, ("a", "b", "c"))
  for kwargs in (
      {"per_class": {"x": 5, "y": 4, "z": 7}},
      {"fractions": {"x": 0.5, "y": 0.2, "z": 0.3}},
  ):
    out = D.stratified_split(ds, seed=1, **kwargs)
    ids = [set(o.images[:, 0, 0, 0].tolist()) for o in out.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    for o in out.values():  # labels travel with their images
      assert np.array_equal(o.labels, o.images[:, 0, 0, 0] % 3)
  assert sum(map(len, ids)) == n  # fractions use every example
  with pytest.raises(ValueError, match="requested"):
    D.stratified_split(ds, {"x": 20}, seed=0)
  with pytest.raises(ValueError, match="exactly one"):
    D.stratified_split(ds, seed=0)


def test_glyph_fonts_and_classes_disjoint():
  letters = D._chars(D.LETTER_CLASSES)
  greek = D._chars(D.GREEK_CLASSES)
  src = D.glyph_fonts("source", letters)
  held = D.glyph_fonts("heldout", greek)
  # Fonts: disjoint by face name, by file and by file content.
  assert not {f.name for f in src} & {f.name for f in held}
  assert not {f.path for f in src} & {f.path for f in held}
  digest = lambda f: hashlib.sha256(open(f.path, "rb").read()).hexdigest()
  assert not {digest(f) for f in src} & {digest(f) for f in held}
  assert all(not D.is_heldout(f) for f in src) and all(D.is_heldout(f) for f in held)
  # matplotlib alone ships 16 DejaVu + 6 Computer Modern source faces and 4 STIX held-out ones.
  assert len(src) >= 16 and len(held) >= 4
  assert not any(
      f.family.startswith(("cmsy", "cmex", "Last Resort", "STIXSize")) for f in D.discover_fonts()
  )
  # Classes and code points.
  assert not set(letters) & set(greek)
  assert not set(letters) & set("0123456789")
  assert "l" not in letters and "I" in letters and "i" in letters
  names = {n: set(D.describe()[n]["classes"]) for n in D.REGISTRY}
  assert not names["glyphs"] & names["greek"]
  assert not names["glyphs"] & names["digits"]
  assert not names["shapes"] & names["textures"]


def test_face_support_rejects_bad_fonts():
  import matplotlib

  ttf = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "fonts", "ttf")
  assert D._face_supports(os.path.join(ttf, "DejaVuSans.ttf"), "Abc\u03b1")
  assert not D._face_supports(os.path.join(ttf, "cmr10.ttf"), "A\u03b1")  # no Greek
  assert not D._face_supports(os.path.join(ttf, "LastResortHE-Regular.ttf"), "ABC")  # same box


def test_texture_orientation_labels():
  ds = D.make_textures(12, seed=9)
  x = ds.images[:, :, :, 0].astype(float)
  dy = np.abs(np.diff(x, axis=1)).mean(axis=(1, 2))  # change down the rows
  dx = np.abs(np.diff(x, axis=2)).mean(axis=(1, 2))  # change along the columns
  horiz = ds.labels == D.TEXTURE_CLASSES.index("stripes_0")
  vert = ds.labels == D.TEXTURE_CLASSES.index("stripes_90")
  assert np.all(dy[horiz] > dx[horiz]) and np.all(dx[vert] > dy[vert])
  # 45 degrees rises to the right: brightness is constant along (+1 col, -1 row).
  d45 = ds.labels == D.TEXTURE_CLASSES.index("stripes_45")
  along = np.abs(x[:, 1:, :-1] - x[:, :-1, 1:]).mean(axis=(1, 2))  # (row+1, col-1) vs (row, col)
  across = np.abs(x[:, 1:, 1:] - x[:, :-1, :-1]).mean(axis=(1, 2))
  assert np.all(along[d45] < across[d45])


def test_generation_speed():
  # CPU time per example (robust to a loaded machine); the defaults (about
  # 20k images) then build in seconds.
  D.glyph_fonts("source", D._chars(D.LETTER_CLASSES))
  D.glyph_fonts("heldout", D._chars(D.GREEK_CLASSES))
  for name, make in _BUILDERS.items():
    t = time.process_time()
    ds = make(10, seed=0)
    per_example = (time.process_time() - t) / ds.images.shape[0]
    assert per_example < 5e-3, (name, per_example)


def test_npz_cache_roundtrip(tmp_path, monkeypatch):
  sizes = {"train": 3, "val": 1, "test": 2}
  first = D.load("textures", cache_dir=tmp_path, per_class=sizes)
  meta = D.dataset_meta("textures", per_class=sizes)
  path = D.cache_path(tmp_path, meta)
  assert os.path.exists(path)
  splits, stored = D.load_npz(path)
  assert stored == meta
  for s in sizes:
    assert np.array_equal(splits[s].images, first[s].images)
    assert np.array_equal(splits[s].labels, first[s].labels)
    assert splits[s].class_names == D.TEXTURE_CLASSES

  def no_build(*a, **k):
    raise AssertionError("should read the cache")

  monkeypatch.setattr(D, "build", no_build)
  cached = D.load("textures", cache_dir=tmp_path, per_class=sizes)
  assert _sha(cached["test"].images) == _sha(first["test"].images)
  # Another seed is another cache entry, so it must build.
  with pytest.raises(AssertionError, match="should read"):
    D.load("textures", cache_dir=tmp_path, per_class=sizes, seed=7)
  monkeypatch.undo()
  glyph_meta = D.dataset_meta("glyphs")
  assert glyph_meta["fonts"] and D.cache_path(tmp_path, glyph_meta) != path


def test_preview_png(tmp_path):
  ds = D.make_shapes(3, seed=0)
  path = D.save_preview(ds, tmp_path / "shapes.png", per_class=3, title="shapes")
  with open(path, "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert D.main(["preview", "--out", str(tmp_path), "--names", "greek", "--per-class", "2"]) == 0
  assert os.path.getsize(tmp_path / "greek.png") > 5000


def test_errors():
  with pytest.raises(KeyError, match="Unknown dataset"):
    D.build("cifar")
  with pytest.raises(ValueError, match="positive int"):
    D.make_shapes(0)
  with pytest.raises(ValueError, match="fixed dataset"):
    D.dataset_meta("digits", per_class={"train": 3})
  with pytest.raises(ValueError, match="role"):
    D.glyph_fonts("target", "A")
