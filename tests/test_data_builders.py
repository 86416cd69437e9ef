"""Tests of face_jax.data's shipped tfds builders (offline, tmp data_dir, no TensorFlow)."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

import face_jax.data as fd
from face_jax.data.builders import common
from face_jax.data.builders import digits as digits_lib
from face_jax.data.builders import wordnet_glosses as wn

WORDNET_DIR = "/usr/share/wordnet"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """One tfds data_dir per module, so prepared datasets are reused across tests."""
  return tmp_path_factory.mktemp("tfds")


def _all_batches(pipe):
  """Concatenates the unmasked rows of every batch of a pipeline."""
  out = {}
  for batch in pipe:
    m = batch["_mask"]
    for k, v in batch.items():
      out.setdefault(k, []).append(v[m])
  return {k: np.concatenate(v) for k, v in out.items()}


def _get(name, split, data_dir, **kw):
  kw.setdefault("process_index", 0)
  kw.setdefault("process_count", 1)
  return fd.get(name, split, str(data_dir), **kw)


# ----------------------------------------------------------------- helpers --


def test_every_kth_per_class_is_stratified_and_in_order():
  labels = np.array([0, 1, 0, 0, 1, 0, 1, 1, 0, 2])
  mask = common.every_kth_per_class(labels, k=2)
  # class 0 at 0,2,3,5,8 -> ranks 1,3 held out (idx 2, 5); class 1 at 1,4,6,7 -> idx 4, 7.
  np.testing.assert_array_equal(np.flatnonzero(mask), [2, 4, 5, 7])
  with pytest.raises(ValueError):
    common.every_kth_per_class(labels, k=1)


# ------------------------------------------------------------------ digits --


def test_digits_splits_counts_and_source_order(data_dir):
  from sklearn.datasets import load_digits

  raw = load_digits()
  expected_images = np.round(raw.images * 255.0 / 16.0).astype(np.uint8)[..., None]
  # Independent re-derivation of the documented split: every 5th of each class.
  test_idx, seen = [], {}
  for i, y in enumerate(raw.target):
    seen[y] = seen.get(y, 0) + 1
    if seen[y] % 5 == 0:
      test_idx.append(i)
  train_idx = sorted(set(range(len(raw.target))) - set(test_idx))

  for split, idx in (("train", train_idx), ("test", test_idx)):
    pipe = _get("digits", split, data_dir, batch_size=100)
    assert pipe.num_examples == len(idx)
    assert pipe.input_key == "image" and pipe.num_classes == 10
    assert pipe.class_names == tuple(str(i) for i in range(10))
    got = _all_batches(pipe)
    assert got["image"].dtype == np.uint8 and got["image"].shape[1:] == (8, 8, 1)
    np.testing.assert_array_equal(got["image"], expected_images[idx])
    np.testing.assert_array_equal(got["label"], raw.target[idx])
    np.testing.assert_array_equal(pipe.label_counts(), np.bincount(raw.target[idx], minlength=10))
  assert (len(train_idx), len(test_idx)) == (1442, 355)

  pipe = _get("digits", "all", data_dir, batch_size=512)
  assert pipe.num_examples == 1797
  got = _all_batches(pipe)  # tfds "all" = train followed by test
  np.testing.assert_array_equal(got["label"], raw.target[train_idx + test_idx])
  assert got["image"].max() == 255
  np.testing.assert_array_equal(pipe.label_counts(), np.bincount(raw.target, minlength=10))


def test_digits_split_helper_matches_builder(data_dir):
  idx = digits_lib.split_indices()
  b = fd.Digits(data_dir=str(data_dir))
  b.download_and_prepare()
  assert b.info.splits["train"].num_examples == len(idx["train"])
  assert b.info.splits["test"].num_examples == len(idx["test"])
  assert str(b.info.version) == "1.0.0" and "digits" in b.info.description


# ------------------------------------------------------------ image_folder --


def _write_image_folder(root, rng):
  """3 classes; mixed PNG/JPEG/grayscale/odd sizes; a non-image file to ignore."""
  spec = {
      "cat": [("a.png", (6, 5), "RGB"), ("b.png", (6, 5), "L"), ("sub/c.png", (12, 10), "RGB")],
      "ant": [("z.png", (6, 5), "RGB"), ("y.JPG", (6, 5), "RGB")],
      "dog": [("x.png", (3, 7), "RGBA")],
  }
  arrays = {}
  for cls, files in spec.items():
    for rel, (h, w), mode in files:
      path = os.path.join(root, cls, rel)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
      arr = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
      img = Image.fromarray(arr[..., 0] if channels == 1 else arr, mode=mode)
      img.save(path, format="JPEG" if rel.lower().endswith(".jpg") else "PNG")
      arrays[f"{cls}/{rel}"] = path
  with open(os.path.join(root, "cat", "notes.txt"), "w") as f:
    f.write("not an image")
  os.makedirs(os.path.join(root, ".hidden"))
  return arrays


def _expected_image(path, size, channels):
  with Image.open(path) as img:
    img = img.convert("RGB" if channels == 3 else "L")
    if img.size != (size[1], size[0]):
      img = img.resize((size[1], size[0]), Image.BILINEAR)
    arr = np.asarray(img)
  return arr[..., None] if arr.ndim == 2 else arr


@pytest.mark.parametrize("channels", [3, 1])
def test_image_folder(tmp_path, data_dir, channels):
  rng = np.random.default_rng(0)
  root = tmp_path / "images"
  paths = _write_image_folder(str(root), rng)
  size = (6, 5)
  pipe = _get(
      "image_folder",
      "train",
      data_dir,
      batch_size=4,
      root_dir=str(root),
      image_size=size,
      channels=channels,
  )
  assert pipe.class_names == ("ant", "cat", "dog")
  assert pipe.num_examples == 6 and pipe.num_batches == 2
  assert pipe.element_spec["image"].shape == (4, 6, 5, channels)
  assert "file_name" in pipe.skipped_features
  got = _all_batches(pipe)
  order = ["ant/y.JPG", "ant/z.png", "cat/a.png", "cat/b.png", "cat/sub/c.png", "dog/x.png"]
  np.testing.assert_array_equal(got["label"], [0, 0, 1, 1, 1, 2])
  for i, rel in enumerate(order):
    np.testing.assert_array_equal(got["image"][i], _expected_image(paths[rel], size, channels))
  np.testing.assert_array_equal(pipe.label_counts(), [2, 3, 1])
  assert str(pipe.info.version) == "1.0.0" and pipe.info.description


def test_image_folder_changes_are_not_served_stale(tmp_path, data_dir):
  rng = np.random.default_rng(1)
  root = tmp_path / "images"
  _write_image_folder(str(root), rng)
  p1 = _get("image_folder", "train", data_dir, batch_size=8, root_dir=str(root), image_size=4)
  Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(
      os.path.join(root, "dog", "new.png")
  )
  p2 = _get("image_folder", "train", data_dir, batch_size=8, root_dir=str(root), image_size=4)
  assert p1.builder.builder_config.name != p2.builder.builder_config.name
  assert (p1.num_examples, p2.num_examples) == (6, 7)


def test_image_folder_split_mapping_and_errors(tmp_path, data_dir):
  rng = np.random.default_rng(2)
  for split, classes in (("train", ["a", "b"]), ("test", ["b", "c"])):
    for c in classes:
      d = tmp_path / split / c
      d.mkdir(parents=True)
      Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).save(d / "0.png")
  roots = {"train": str(tmp_path / "train"), "test": str(tmp_path / "test")}
  test = _get("image_folder", "test", data_dir, batch_size=2, root_dir=roots, image_size=5)
  assert test.class_names == ("a", "b", "c")
  np.testing.assert_array_equal(_all_batches(test)["label"], [1, 2])
  with pytest.raises(FileNotFoundError, match="does not exist"):
    _get("image_folder", "train", data_dir, root_dir=str(tmp_path / "nope"))
  (tmp_path / "empty" / "cls").mkdir(parents=True)
  with pytest.raises(ValueError, match="no image"):
    _get("image_folder", "train", data_dir, root_dir=str(tmp_path / "empty"))
  with pytest.raises(ValueError, match="root_dir"):
    _get("image_folder", "train", data_dir)


# ------------------------------------------------------------------ arrays --


def test_arrays_from_npz_with_source_probs(tmp_path, data_dir):
  rng = np.random.default_rng(3)
  n = 53
  feats = rng.normal(size=(n, 7)).astype(np.float64)
  labels = rng.integers(0, 4, n)
  probs = rng.dirichlet(np.ones(5), n).astype(np.float32)
  path = tmp_path / "data.npz"
  np.savez(
      path,
      features=feats,
      labels=labels,
      source_probs=probs,
      class_names=np.array(["w", "x", "y", "z"]),
  )
  pipe = _get("arrays", "train", data_dir, batch_size=16, arrays=str(path))
  assert pipe.input_key == "features" and pipe.class_names == ("w", "x", "y", "z")
  assert pipe.element_spec["source_probs"].shape == (16, 5)
  assert pipe.element_spec["features"].dtype == np.float32
  got = _all_batches(pipe)
  np.testing.assert_array_equal(got["features"], feats.astype(np.float32))
  np.testing.assert_array_equal(got["label"], labels)
  np.testing.assert_array_equal(got["source_probs"], probs)
  for batch in pipe:  # padding rows are zero
    assert not batch["source_probs"][~batch["_mask"]].any()
  np.testing.assert_array_equal(pipe.label_counts(), np.bincount(labels, minlength=4))


def test_arrays_images_and_split_mapping(data_dir):
  rng = np.random.default_rng(4)
  train = {"image": rng.integers(0, 256, (10, 4, 3), dtype=np.uint8), "labels": np.arange(10) % 3}
  test = {
      "image": rng.integers(0, 256, (4, 4, 3), dtype=np.uint8),
      "labels": np.array([0, 0, 5, 1]),
  }
  pipe = _get("arrays", "test", data_dir, batch_size=3, arrays={"train": train, "test": test})
  assert pipe.num_classes == 6 and pipe.input_key == "image"
  got = _all_batches(pipe)
  np.testing.assert_array_equal(got["image"], test["image"][..., None])
  np.testing.assert_array_equal(got["label"], test["labels"])
  # Same content -> same prepared dataset; different content -> a new one.
  again = _get("arrays", "test", data_dir, arrays={"train": train, "test": test})
  assert again.builder.data_path == pipe.builder.data_path
  test2 = dict(test, labels=np.array([0, 0, 5, 2]))
  other = _get("arrays", "test", data_dir, arrays={"train": train, "test": test2})
  assert other.builder.data_path != pipe.builder.data_path


@pytest.mark.parametrize(
    "arrays,match",
    [
        ({"features": np.zeros((3, 2))}, "labels"),
        (
            {
                "features": np.zeros((3, 2)),
                "image": np.zeros((3, 2, 2), np.uint8),
                "labels": np.zeros(3, int),
            },
            "exactly one",
        ),
        ({"features": np.zeros((3, 2)), "labels": np.zeros(4, int)}, "rows"),
        ({"image": np.zeros((3, 2, 2), np.float32), "labels": np.zeros(3, int)}, "uint8"),
        ({"features": np.zeros((3, 2)), "labels": np.array([0, -1, 1])}, "negative"),
        (
            {"features": np.zeros((3, 2)), "labels": np.zeros(3, int), "extra": np.zeros(3)},
            "unknown",
        ),
    ],
)
def test_arrays_rejects_bad_input(data_dir, arrays, match):
  with pytest.raises(ValueError, match=match):
    _get("arrays", "train", data_dir, arrays=arrays)


# ---------------------------------------------------------------- text_csv --


def test_text_csv_names_from_csv_and_jsonl(tmp_path, data_dir):
  train_rows = [
      ("hello, world", "spam"),
      ('quoted "x"\nnew line', "ham"),
      ("naïve café ✓", "eggs"),
      ("more", "spam"),
  ]
  with open(tmp_path / "train.csv", "w", newline="", encoding="utf-8") as f:
    w = csv.writer(f)
    w.writerow(["id", "text", "label"])
    for i, (t, l) in enumerate(train_rows):
      w.writerow([i, t, l])
  test_rows = [("α β", "ham"), ("last", "spam")]
  with open(tmp_path / "test.jsonl", "w", encoding="utf-8") as f:
    for t, l in test_rows:
      f.write(json.dumps({"text": t, "label": l}) + "\n")
    f.write("\n")
  files = {"train": str(tmp_path / "train.csv"), "test": str(tmp_path / "test.jsonl")}
  pipe = _get("text_csv", "train", data_dir, batch_size=3, files=files)
  assert pipe.input_key == "text" and pipe.class_names == ("eggs", "ham", "spam")
  assert pipe.element_spec["text"].dtype == object
  batches = list(pipe)
  assert len(batches) == 2
  assert all(isinstance(t, str) for b in batches for t in b["text"])
  assert list(batches[1]["text"][~batches[1]["_mask"]]) == ["", ""]
  got = _all_batches(pipe)
  assert list(got["text"]) == [t for t, _ in train_rows]
  np.testing.assert_array_equal(got["label"], [2, 1, 0, 2])
  test = _all_batches(_get("text_csv", "test", data_dir, batch_size=3, files=files))
  assert list(test["text"]) == ["α β", "last"]
  np.testing.assert_array_equal(test["label"], [1, 2])


def test_text_csv_integer_labels(tmp_path, data_dir):
  with open(tmp_path / "a.csv", "w", newline="") as f:
    f.write("text,label\nx,3\ny,0\n")
  with open(tmp_path / "b.jsonl", "w") as f:
    f.write('{"text": "z", "label": 1}\n')
  pipe = _get(
      "text_csv",
      "train",
      data_dir,
      batch_size=8,
      files=[str(tmp_path / "a.csv"), str(tmp_path / "b.jsonl")],
  )
  assert pipe.num_classes == 4 and pipe.class_names == ("0", "1", "2", "3")
  got = _all_batches(pipe)
  assert list(got["text"]) == ["x", "y", "z"]
  np.testing.assert_array_equal(got["label"], [3, 0, 1])
  np.testing.assert_array_equal(pipe.label_counts(), [1, 1, 0, 1])
  with open(tmp_path / "bad.csv", "w") as f:
    f.write("sentence,label\nx,1\n")
  with pytest.raises(ValueError, match="header"):
    _get("text_csv", "train", data_dir, files=str(tmp_path / "bad.csv"))


# --------------------------------------------------------- wordnet_glosses --


def _require_wordnet():
  if os.path.isfile(os.path.join(WORDNET_DIR, "data.noun")):
    return
  if os.environ.get("FACE_JAX_ALLOW_MISSING_WORDNET") == "1":
    pytest.skip("WordNet missing and FACE_JAX_ALLOW_MISSING_WORDNET=1.")
  pytest.fail(
      f"{WORDNET_DIR} is missing: apt-get install wordnet-base "
      "(or set FACE_JAX_ALLOW_MISSING_WORDNET=1 to skip)."
  )


def test_wordnet_subset(data_dir):
  _require_wordnet()
  ids, texts, labels = wn.load_source(WORDNET_DIR, wn.PARTS, subsample=25)
  test_mask = common.every_kth_per_class(labels, 5)
  pipe = _get("wordnet_glosses", "test", data_dir, batch_size=500, subsample=25)
  assert pipe.num_classes == 45 and pipe.class_names == wn.LEXNAMES
  assert pipe.input_key == "text"
  assert pipe.num_examples == int(test_mask.sum())
  got = _all_batches(pipe)
  assert list(got["text"]) == [t for t, m in zip(texts, test_mask) if m]
  np.testing.assert_array_equal(got["label"], labels[test_mask])
  np.testing.assert_array_equal(pipe.label_counts(), np.bincount(labels[test_mask], minlength=45))
  train = _get("wordnet_glosses", "train", data_dir, batch_size=500, subsample=25)
  assert train.num_examples + pipe.num_examples == len(ids)
  # A gloss is the text after " | " on a data.noun line.
  with open(os.path.join(WORDNET_DIR, "data.noun"), encoding="utf-8") as f:
    first = next(line for line in f if not line.startswith("  "))
  assert texts[0] == first.split(" | ", 1)[1].strip()
  assert int(first.split()[1]) == labels[0]


def test_wordnet_full_build_counts(data_dir):
  _require_wordnet()
  pipe = _get("wordnet_glosses", "all", data_dir, batch_size=4096)
  assert pipe.num_examples == 117659  # WordNet 3.0: 82115 + 13767 + 18156 + 3621 synsets
  counts = pipe.label_counts()
  assert counts.sum() == 117659 and (counts > 0).all()
  train = _get("wordnet_glosses", "train", data_dir, batch_size=4096)
  test = _get("wordnet_glosses", "test", data_dir, batch_size=4096)
  assert (train.num_examples, test.num_examples) == (94145, 23514)
  np.testing.assert_array_equal(train.label_counts() + test.label_counts(), counts)


def test_wordnet_missing_gives_install_hint(tmp_path, data_dir):
  with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
    _get("wordnet_glosses", "train", data_dir, wordnet_dir=str(tmp_path))
  with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
    _get("wordnet_glosses", "train", data_dir, wordnet_dir=str(tmp_path / "absent"))
  with pytest.raises(ValueError, match="parts"):
    _get("wordnet_glosses", "train", data_dir, parts=("nouns",))


def test_lexnames_table_matches_installed_manual_page():
  """The built-in table equals the lexnames(5WN) page shipped by wordnet-base."""
  import gzip

  page = "/usr/share/man/man5/lexnames.5WN.gz"
  if not os.path.isfile(page):
    _require_wordnet()  # fails / skips with the install hint
    pytest.skip("wordnet-base installed without its manual pages.")
  rows = {}
  with gzip.open(page, "rt") as f:
    for line in f:
      parts = line.split("\t")
      if len(parts) >= 2 and parts[0].isdigit() and len(parts[0]) == 2:
        rows[int(parts[0])] = parts[1].strip()
  assert tuple(rows[i] for i in range(45)) == wn.LEXNAMES


def test_builders_are_registered_and_versioned():
  names = tfds.list_builders(with_community_datasets=False)
  for name, cls in fd.SHIPPED_BUILDERS.items():
    assert name in names
    assert cls.name == name and str(cls.VERSION) == "1.0.0"
