"""Throughput of face_jax.data pipelines (examples/s), warm-up pass excluded.

Usage:
  python benchmarks/input_pipeline_throughput.py [--data_dir DIR] [--n32 N] [--repeats R]

Measures full passes (decode + batch + pad) over:
  * digits/all (1797 x [8,8,1] uint8, raw Tensor feature),
  * a synthetic 32x32x3 uint8 set written with the `arrays` builder (raw Tensor),
  * the same images written as PNG files and prepared with `image_folder`
    (PNG-encoded tfds Image feature, decoded with Pillow),
  * wordnet_glosses/train (text) if /usr/share/wordnet is installed,
for num_workers in {0, 2}, with batch size 256 on one process. After one
warm-up pass, reports the best of `repeats` passes: whole-pass examples/s, the
latency of the first batch (worker start-up for num_workers > 0: grain starts
fresh worker processes for every pass) and the steady examples/s after it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np


def _rate(pipe, repeats: int) -> tuple[float, float, float]:
  """(full-pass examples/s, first-batch latency s, examples/s after the first batch)."""
  for _ in pipe:  # warm-up pass (file caches, imports)
    pass
  best = (float("inf"), float("inf"), float("inf"))
  for _ in range(repeats):
    t0 = time.perf_counter()
    n = n_first = 0
    t_first = None
    for batch in pipe:
      n += int(batch["_mask"].sum())
      if t_first is None:
        t_first, n_first = time.perf_counter(), n
    t_end = time.perf_counter()
    assert n == pipe.num_examples, (n, pipe.num_examples)
    best = min(best, (t_end - t0, t_first - t0, t_end - t_first))
  total, first, rest = best
  n_rest = pipe.num_examples - n_first
  return pipe.num_examples / total, first, (n_rest / rest if rest > 0 else float("nan"))


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--data_dir", default=None)
  parser.add_argument("--n32", type=int, default=20000)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--workers", type=int, nargs="*", default=[0, 2])
  args = parser.parse_args()
  with tempfile.TemporaryDirectory(prefix="face_jax_bench_") as tmp:
    _run(args, tmp)


def _run(args, tmp: str) -> None:
  import face_jax.data as fd  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  data_dir = args.data_dir or os.path.join(tmp, "tfds")
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (args.n32, 32, 32, 3), dtype=np.uint8)
  labels = np.arange(args.n32) % 10
  root = os.path.join(tmp, "folder")
  n_png = min(args.n32, 5000)
  for i in range(n_png):
    d = os.path.join(root, f"c{labels[i]}")
    os.makedirs(d, exist_ok=True)
    Image.fromarray(images[i]).save(os.path.join(d, f"{i:06d}.png"))

  cases = [
      ("digits/all", dict(name="digits", split="all")),
      (
          f"arrays 32x32x3 raw ({args.n32})",
          dict(name="arrays", split="train", arrays={"image": images, "labels": labels}),
      ),
      (
          f"image_folder 32x32x3 png ({n_png})",
          dict(name="image_folder", split="train", root_dir=root, image_size=32),
      ),
  ]
  if os.path.isfile("/usr/share/wordnet/data.noun"):
    cases.append(("wordnet_glosses/train (text)", dict(name="wordnet_glosses", split="train")))
  print(
      f"{'dataset':36s} {'workers':>7s} {'prep s':>7s} {'pass ex/s':>10s} "
      f"{'1st batch s':>11s} {'steady ex/s':>11s}"
  )
  for label, kw in cases:
    for w in args.workers:
      t0 = time.perf_counter()
      pipe = fd.get(
          data_dir=data_dir, batch_size=256, process_index=0, process_count=1, num_workers=w, **kw
      )
      prep = time.perf_counter() - t0
      rate, first, steady = _rate(pipe, args.repeats)
      print(f"{label:36s} {w:7d} {prep:7.1f} {rate:10.0f} {first:11.2f} {steady:11.0f}", flush=True)


if __name__ == "__main__":
  main()
