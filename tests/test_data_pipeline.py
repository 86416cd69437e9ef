"""Tests of face_jax.data.get / Pipeline: padding, masking, per-process slicing,
determinism, label counts, grain workers, tfds mock_data and error messages."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow_datasets as tfds

import face_jax.data as fd


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def _index_arrays(n, num_classes=7, seed=0):
  """Examples whose feature is their own index, so every row is identifiable."""
  rng = np.random.default_rng(seed)
  return {
      "features": np.arange(n, dtype=np.float32)[:, None],
      "labels": rng.integers(0, num_classes, n),
      "source_probs": rng.random((n, 3)).astype(np.float32),
  }


@pytest.mark.parametrize("process_index,process_count", [(0, 1), (1, 3)])
def test_process_range_matches_tfds_even_splits(data_dir, process_index, process_count):
  """Our slices have the sizes *and* contents of tfds.even_splits."""
  pipe = fd.get(
      "digits",
      "train",
      data_dir,
      batch_size=128,
      process_index=process_index,
      process_count=process_count,
  )
  sub = tfds.even_splits("train", n=process_count)[process_index]
  assert pipe.num_local_examples == pipe.info.splits[sub].num_examples
  src = pipe.builder.as_data_source(split=sub)
  expected = np.stack([src[i]["image"] for i in range(len(src))])
  got = np.concatenate([b["image"][b["_mask"]] for b in pipe])
  np.testing.assert_array_equal(got, expected)


def test_process_range_sizes():
  for n in (0, 1, 2, 10, 11, 1797):
    for p in (1, 2, 3, 7):
      ranges = [fd.process_range(n, i, p) for i in range(p)]
      assert ranges[0][0] == 0 and ranges[-1][1] == n
      assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
      sizes = [b - a for a, b in ranges]
      assert max(sizes) == math.ceil(n / p) and max(sizes) - min(sizes) <= 1
  with pytest.raises(ValueError):
    fd.process_range(10, 3, 3)


def test_padding_and_mask(data_dir):
  n = 101
  arrays = _index_arrays(n)
  pipe = fd.get(
      "arrays", "train", data_dir, batch_size=32, process_index=0, process_count=1, arrays=arrays
  )
  assert (pipe.num_examples, pipe.num_local_examples, pipe.num_batches, len(pipe)) == (
      101,
      101,
      4,
      4,
  )
  batches = list(pipe)
  assert len(batches) == 4
  for b in batches:
    assert set(b) == {"features", "label", "source_probs", "_mask"}
    for k, spec in pipe.element_spec.items():
      assert b[k].shape == spec.shape and b[k].dtype == spec.dtype, k
  assert [int(b["_mask"].sum()) for b in batches] == [32, 32, 32, 5]
  last = batches[-1]
  np.testing.assert_array_equal(last["_mask"], np.arange(32) < 5)
  assert not last["label"][5:].any() and not last["features"][5:].any()
  assert not last["source_probs"][5:].any()
  feats = np.concatenate([b["features"][b["_mask"]] for b in batches])[:, 0]
  labels = np.concatenate([b["label"][b["_mask"]] for b in batches])
  np.testing.assert_array_equal(feats, np.arange(n))  # exact order, nothing dropped
  np.testing.assert_array_equal(labels, arrays["labels"])
  assert batches[0]["label"].dtype == np.int32


@pytest.mark.parametrize("n,batch_size", [(1001, 64), (30, 4), (2, 5)])
def test_processes_partition_the_split(data_dir, n, batch_size):
  arrays = _index_arrays(n, seed=n)
  pipes = [
      fd.get(
          "arrays",
          "train",
          data_dir,
          batch_size=batch_size,
          process_index=i,
          process_count=3,
          arrays=arrays,
          num_classes=7,
      )
      for i in range(3)
  ]
  expected_batches = math.ceil(math.ceil(n / 3) / batch_size)
  seen = []
  for p in pipes:
    batches = list(p)
    assert p.num_batches == len(batches) == expected_batches
    assert p.num_examples == n
    local = np.concatenate([b["features"][b["_mask"], 0] for b in batches])
    assert local.size == p.num_local_examples
    np.testing.assert_array_equal(local, np.arange(*p.local_range))  # contiguous slice
    seen.append(local)
  union = np.concatenate(seen)
  assert union.size == n and np.unique(union).size == n  # no duplicates
  np.testing.assert_array_equal(np.sort(union), np.arange(n))  # nothing missing
  for p in pipes:  # label_counts is global, identical on every process
    np.testing.assert_array_equal(p.label_counts(), np.bincount(arrays["labels"], minlength=7))


def test_iteration_is_deterministic(data_dir):
  pipe = fd.get("digits", "test", data_dir, batch_size=50, process_index=0, process_count=1)
  first, second = list(pipe), list(pipe)
  assert len(first) == len(second) == pipe.num_batches == 8
  for a, b in zip(first, second):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  # A fresh Pipeline object over the same data gives the same stream.
  other = fd.get("digits", "test", data_dir, batch_size=50, process_index=0, process_count=1)
  for a, b in zip(first, other):
    np.testing.assert_array_equal(a["image"], b["image"])


def test_label_counts_metadata_and_scan_agree(data_dir):
  """Stored per-split counts (no data read) and a label scan (sub-split) agree."""
  full = fd.get("digits", "train", data_dir, batch_size=256, process_index=0, process_count=1)
  labels = np.concatenate([b["label"][b["_mask"]] for b in full])
  meta = full._label_counts_from_metadata()
  assert meta is not None
  np.testing.assert_array_equal(meta, np.bincount(labels, minlength=10))
  np.testing.assert_array_equal(full._scan_label_counts(), meta)
  half = fd.get("digits", "train[:50%]", data_dir, batch_size=256, process_index=1, process_count=2)
  assert half._label_counts_from_metadata() is None  # sliced split -> scan
  n = half.num_examples
  np.testing.assert_array_equal(half.label_counts(), np.bincount(labels[:n], minlength=10))
  combo = fd.get("digits", "train+test", data_dir, process_index=0, process_count=1)
  all_ = fd.get("digits", "all", data_dir, process_index=0, process_count=1)
  np.testing.assert_array_equal(combo.label_counts(), all_.label_counts())
  assert all_.label_counts().sum() == 1797
  counts = all_.label_counts()
  counts[0] = -5  # a copy: the cache is not mutated
  assert all_.label_counts()[0] > 0


def test_grain_workers_match_in_process(data_dir):
  kw = dict(batch_size=64, process_index=1, process_count=2)
  ref = list(fd.get("digits", "all", data_dir, **kw))
  pipe = fd.get("digits", "all", data_dir, num_workers=2, **kw)
  got = list(pipe)
  assert len(got) == len(ref) == pipe.num_batches
  for a, b in zip(ref, got):
    for k in a:
      assert type(b[k]) is np.ndarray
      np.testing.assert_array_equal(a[k], b[k])


def test_text_batches_are_str_object_arrays(tmp_path, data_dir):
  path = tmp_path / "t.jsonl"
  path.write_text(
      '{"text": "a", "label": "x"}\n{"text": "bé", "label": "y"}\n' '{"text": "c", "label": "x"}\n',
      encoding="utf-8",
  )
  pipe = fd.get(
      "text_csv", "train", data_dir, batch_size=2, process_index=1, process_count=2, files=str(path)
  )
  (batch,) = list(pipe)
  assert batch["text"].dtype == object and list(batch["text"]) == ["c", ""]
  np.testing.assert_array_equal(batch["_mask"], [True, False])
  np.testing.assert_array_equal(batch["label"], [0, 0])


def test_default_process_slot_comes_from_jax(data_dir):
  import jax

  pipe = fd.get("digits", "test", data_dir)
  assert (pipe.process_index, pipe.process_count) == (jax.process_index(), jax.process_count())
  assert pipe.batch_size == 256


def test_mock_data_standard_tfds_name(tmp_path):
  """tfds.testing.mock_data works without TensorFlow for array_record data sources."""
  with tfds.testing.mock_data(num_examples=37):
    pipe = fd.get(
        "mnist",
        "train",
        str(tmp_path),
        batch_size=16,
        process_index=0,
        process_count=1,
        download_and_prepare=False,
    )
    assert pipe.num_examples == 37 and pipe.num_batches == 3
    assert pipe.element_spec["image"].shape == (16, 28, 28, 1)
    first, second = list(pipe), list(pipe)
    labels = np.concatenate([b["label"][b["_mask"]] for b in first])
    assert labels.size == 37 and labels.min() >= 0 and labels.max() < 10
    for a, b in zip(first, second):
      np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(pipe.label_counts(), np.bincount(labels, minlength=10))
    parts = [
        fd.get("mnist", "train", str(tmp_path), batch_size=8, process_index=i, process_count=3)
        for i in range(3)
    ]
    assert {p.num_batches for p in parts} == {2}
    imgs = np.concatenate([b["image"][b["_mask"]] for p in parts for b in p])
    np.testing.assert_array_equal(imgs, np.concatenate([b["image"][b["_mask"]] for b in first]))


def test_mock_data_text_label_key_and_variable_shapes(tmp_path):
  d = str(tmp_path)
  with tfds.testing.mock_data(num_examples=5):
    text = fd.get("imdb_reviews", "test", d, batch_size=4, process_index=0, process_count=1)
    assert text.input_key == "text" and text.num_classes == 2
    batches = list(text)
    assert [int(b["_mask"].sum()) for b in batches] == [4, 1]
    assert all(isinstance(t, str) for b in batches for t in b["text"])
    # A second ClassLabel as the label; the original "label" is then left out.
    coarse = fd.get(
        "cifar100",
        "test",
        d,
        batch_size=4,
        process_index=0,
        process_count=1,
        label_key="coarse_label",
    )
    assert coarse.num_classes == 20 and "label" in coarse.skipped_features
    assert set(coarse.element_spec) == {"image", "label", "_mask"}
    fine = fd.get("cifar100", "test", d, batch_size=4, process_index=0, process_count=1)
    assert fine.num_classes == 100 and fine.element_spec["coarse_label"].shape == (4,)
    assert "id" in fine.skipped_features  # non-input text features are not batched
    with pytest.raises(ValueError, match="fixed shape"):
      fd.get("oxford_flowers102", "test", d, process_index=0, process_count=1)


def test_unprepared_tfds_dataset_says_how_to_prepare(tmp_path):
  with pytest.raises(fd.DatasetNotPreparedError, match=r"tfds build mnist .*array_record"):
    fd.get("mnist", "train", str(tmp_path), process_index=0, process_count=1)
  with pytest.raises(fd.DatasetNotPreparedError, match="not prepared"):
    fd.get(
        "digits",
        "train",
        str(tmp_path / "empty"),
        process_index=0,
        process_count=1,
        download_and_prepare=False,
    )


def test_tf_backend(data_dir):
  try:
    import tensorflow  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    with pytest.raises(ImportError, match="pip install tensorflow"):
      fd.get("digits", "test", data_dir, backend="tf", process_index=0, process_count=1)
    return
  # With TensorFlow installed, the tf.data path must give the grain path's batches.
  tf_dir = data_dir + "_tfrecord"
  ref = list(fd.get("digits", "test", data_dir, batch_size=100, process_index=1, process_count=2))
  got = list(
      fd.get(
          "digits", "test", tf_dir, batch_size=100, process_index=1, process_count=2, backend="tf"
      )
  )
  assert len(ref) == len(got)
  for a, b in zip(ref, got):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def test_tf_backend_collation_matches_grain_collation():
  """The tf path's column collation (not runnable without TF) equals the grain one."""
  from face_jax.data import input_pipeline as ip  # pylint: disable=g-import-not-at-top

  fields = [
      ip._Field("image", "image", "array", (2, 2, 1), np.dtype(np.uint8)),
      ip._Field("lab", "label", "array", (), np.dtype(np.int32)),
      ip._Field("text", "text", "text", (), np.dtype(object)),
  ]
  rng = np.random.default_rng(0)
  records = [
      {
          "image": rng.integers(0, 256, (2, 2, 1), dtype=np.uint8),
          "lab": i + 1,
          "text": f"t{i}é".encode(),
      }
      for i in range(3)
  ]
  columns = {k: np.stack([np.asarray(r[k]) for r in records]) for k in records[0]}
  columns["text"] = np.array([r["text"] for r in records], dtype=object)
  for n in (0, 3):
    a = ip._collate_records(records[:n], fields, 5)
    b = ip._collate_columns(columns, n, fields, 5)
    assert a.keys() == b.keys() == {"image", "label", "text", "_mask"}
    for k in a:
      assert a[k].dtype == b[k].dtype
      np.testing.assert_array_equal(a[k], b[k])
  assert list(b["text"]) == ["t0é", "t1é", "t2é", "", ""]


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(name="no_such_dataset_xyz"), ValueError, "Unknown dataset"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(backend="torch"), ValueError, "backend"),
        (dict(num_workers=-1), ValueError, "num_workers"),
        (dict(process_index=3, process_count=3), ValueError, "process_index"),
        (dict(label_key="nope"), ValueError, "label feature"),
        (dict(input_key="nope"), ValueError, "input_key"),
    ],
)
def test_bad_arguments(data_dir, kwargs, error, match):
  args = dict(name="digits", split="test", data_dir=data_dir, process_index=0, process_count=1)
  args.update(kwargs)
  with pytest.raises(error, match=match):
    fd.get(**args)
