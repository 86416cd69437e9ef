"""Tests for face_jax.reports: ranking rows, tables, JSON and the ranking plot."""

import json
import math

import numpy as np
import pytest

from face_jax import reports


def _rows(transform):
  nc1 = np.array([0.5, 1.2, 3.0])
  c = -nc1 if transform == "neg" else -np.log(nc1)
  f = np.array([-0.1, -0.2, -0.05])
  return [
      {
          "model": f"m{i}",
          "face": float(c[i] + f[i]),
          "face.C": float(c[i]),
          "face.F": float(f[i]),
          "face.nc1": float(nc1[i]),
      }
      for i in range(3)
  ]


@pytest.mark.parametrize("transform,label", [("neg", "C = −NC1"), ("neglog", "C = −ln NC1")])
def test_collapse_label_names_the_transform_used(transform, label):
  assert reports._collapse_label(_rows(transform), "face").endswith(label)


def test_collapse_label_without_nc1_is_generic():
  rows = [{k: v for k, v in r.items() if k != "face.nc1"} for r in _rows("neg")]
  assert reports._collapse_label(rows, "face") == "variance collapse C"


def test_plot_ranking_writes_png(tmp_path):
  for metric, rows in (
      ("face", _rows("neglog")),
      (
          "logme",
          [
              {"model": "a", "logme": 1.0},
              {"model": "b", "logme": math.nan},
              {"model": "c", "logme": -0.5},
          ],
      ),
  ):
    path = reports.plot_ranking(rows, str(tmp_path / f"{metric}.png"), metric=metric)
    with open(path, "rb") as fh:
      assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_write_json_is_strict_json(tmp_path):
  """Non-finite floats are written as the strings 'nan' / 'inf' / '-inf' (strict JSON)."""
  path = reports.write_json(
      str(tmp_path / "r.json"),
      {"a": np.float32(1.5), "b": math.nan, "c": np.arange(2), "d": -math.inf},
  )
  text = open(path).read()
  assert "NaN" not in text and "Infinity" not in text
  data = json.loads(text)
  assert data == {"a": 1.5, "b": "nan", "c": [0, 1], "d": "-inf"}


def test_jsonable_nonfinite_policies():
  value = {"a": [np.float64(np.nan), np.inf], "b": np.bool_(True), "c": np.int64(3)}
  assert reports.jsonable(value) == {"a": ["nan", "inf"], "b": True, "c": 3}
  assert reports.jsonable(value, nonfinite="null") == {"a": [None, None], "b": True, "c": 3}
  with pytest.raises(ValueError, match="nonfinite"):
    reports.jsonable(1.0, nonfinite="drop")


def test_write_json_replaces_atomically(tmp_path):
  path = str(tmp_path / "r.json")
  reports.write_json(path, {"x": 1})
  reports.write_json(path, {"x": math.inf}, nonfinite="null")
  assert json.load(open(path)) == {"x": None}
  assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_write_csv_needs_rows(tmp_path):
  with pytest.raises(ValueError, match="no rows"):
    reports.write_csv(str(tmp_path / "e.csv"), [])
