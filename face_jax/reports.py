"""Every writer of results: JSON, CSV, text and Markdown tables, plots (an edge module: it does IO).

Synopsis::

    rows = reports.ranking_rows({'model_a': result_a, 'model_b': result_b})
    print(reports.format_table(rows))
    reports.write_json(path, {'models': rows}); reports.write_csv(path, rows)
    reports.plot_ranking(rows, 'ranking.png')

    report = {'FaCe': evaluation.evaluate_ranking(scores, truth, n_boot=1000)}
    print(reports.format_markdown_table(evaluation.ranking_table(report)))
    reports.plot_scores_vs_truth(scores, truth, 'score_vs_truth.png')
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from face_jax import evaluation


def jsonable(obj: Any, *, nonfinite: str = 'string') -> Any:
  """Converts results (dataclasses, mappings, numpy values) to strict-JSON values.

  Args:
    obj: the value.
    nonfinite: how NaN and ±inf floats are written: 'string' (the strings
      'nan', 'inf', '-inf'; results files) or 'null' (None; benchmark files).
  """
  if nonfinite not in ('string', 'null'):
    raise ValueError(f"nonfinite must be 'string' or 'null', got {nonfinite!r}")
  rec = lambda v: jsonable(v, nonfinite=nonfinite)
  if hasattr(obj, 'to_dict'):
    return rec(obj.to_dict())
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return rec(dataclasses.asdict(obj))
  if isinstance(obj, Mapping):
    return {str(k): rec(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [rec(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return rec(obj.tolist())
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, np.integer):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    v = float(obj)
    if math.isfinite(v):
      return v
    if nonfinite == 'null':
      return None
    return 'nan' if math.isnan(v) else ('inf' if v > 0 else '-inf')
  return obj


def write_json(path: str, obj: Any, *, nonfinite: str = 'string') -> str:
  """Writes ``jsonable(obj)`` atomically (a temporary file, then a rename); returns the path."""
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(jsonable(obj, nonfinite=nonfinite), f, indent=1, allow_nan=False)
    f.write('\n')
  os.replace(tmp, path)
  return path


def _scalar(v):
  if hasattr(v, 'score'):
    return v.score
  return v


def ranking_rows(
    results: Mapping[str, Mapping[str, Any]],
    *,
    rank_by: str = 'face',
    truth: Mapping[str, float] | None = None,
) -> list[dict]:
  """One row per model with every metric's scalar (FaCe also with its terms), ranked by ``rank_by``.

  Args:
    results: ``{model: {metric: value or result}}``.
    rank_by: the metric to rank by (descending).
    truth: optional ``{model: ground truth}`` added as a column.
  """
  rows = []
  for model, res in results.items():
    row: dict[str, Any] = {'model': model}
    for metric, value in res.items():
      if hasattr(value, 'variance_collapse'):
        row[metric] = value.score
        row[f'{metric}.C'] = value.variance_collapse
        row[f'{metric}.F'] = value.class_fairness
        row[f'{metric}.nc1'] = value.nc1
      elif isinstance(value, (tuple, list, np.ndarray)):
        for i, v in enumerate(np.ravel(value)):
          row[f'{metric}[{i}]'] = float(v)
      else:
        row[metric] = _scalar(value)
    if truth is not None:
      row['truth'] = truth.get(model)
    rows.append(row)
  key = lambda r: (-math.inf if r.get(rank_by) is None else float(r[rank_by]))
  rows.sort(key=key, reverse=True)
  for i, r in enumerate(rows, 1):
    r['rank'] = i
  return rows


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
  """Union of the rows' keys in first-seen order ('rank' and 'model' first when present)."""
  cols = [c for c in ('rank', 'model') if any(c in r for r in rows)]
  for r in rows:
    for k in r:
      if k not in cols:
        cols.append(k)
  return cols


def write_csv(path: str, rows: Sequence[Mapping[str, Any]]) -> str:
  """Writes rows (dicts) as CSV, one column per key (the union, 'rank' and 'model' first).

  None is written as an empty cell, non-finite floats as 'nan' / 'inf' / '-inf'.

  Returns:
    The path written, as str.

  Raises:
    ValueError: no rows.
  """
  if not rows:
    raise ValueError('write_csv: no rows')
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  cols = _columns(rows)
  with open(path, 'w', newline='') as f:
    w = csv.DictWriter(f, fieldnames=cols)
    w.writeheader()
    for r in rows:
      w.writerow({c: jsonable(r.get(c)) for c in cols})
  return path


def _fmt(v) -> str:
  if v is None:
    return '-'
  if isinstance(v, (float, np.floating)):
    v = float(v)
    if not math.isfinite(v):
      return str(v)
    return f'{v:.6g}'
  return str(v)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
  """A plain-text table of the rows."""
  cols = list(columns) if columns else _columns(rows)
  cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
  widths = [
      max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)
  ]
  line = lambda vals: '  '.join(
      v.rjust(w) if i != 1 else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths))
  )
  out = [line(cols), line(['-' * w for w in widths])]
  out += [line(row) for row in cells]
  return '\n'.join(out)


def plot_ranking(
    rows: Sequence[Mapping[str, Any]], path: str, *, metric: str = 'face', title: str | None = None
) -> str:
  """Horizontal bars of a metric per model (FaCe: stacked C and λ·F terms), PNG."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  rows = [r for r in rows if r.get(metric) is not None and math.isfinite(float(r[metric]))]
  fig = Figure(figsize=(7.5, 0.45 * max(len(rows), 2) + 1.9))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  names = [r['model'] for r in rows][::-1]
  vals = [float(r[metric]) for r in rows][::-1]
  ypos = np.arange(len(rows))
  if rows and f'{metric}.C' in rows[0]:
    c = [float(r[f'{metric}.C']) for r in rows][::-1]
    f = [v - ci for v, ci in zip(vals, c)]
    ax.barh(ypos, c, color='#4C72B0', label=_collapse_label(rows, metric))
    ax.barh(ypos, f, left=c, color='#DD8452', label='λ·class fairness F')
    ax.plot(vals, ypos, 'k|', markersize=14, label='score S')
    ax.legend(loc='lower center', bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
    title_pad = 22.0
  else:
    ax.barh(ypos, vals, color='#4C72B0')
    title_pad = 6.0
  ax.set_yticks(ypos, names)
  ax.axvline(0.0, color='grey', lw=0.8)
  ax.set_xlabel(metric)
  ax.set_title(
      title or f'{metric} ranking (higher = predicted more transferable)',
      fontsize=10,
      pad=title_pad,
  )
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches='tight')
  return path


def plot_class_overlap(
    overlaps: Mapping[str, Mapping[str, float]],
    path: str,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> str:
  """FaCe's per-class overlap o_k, one row per model (in the given order), as a heatmap PNG.

  Args:
    overlaps: ``{model: {class label (str or int): o_k}}`` (classes a model left out
      are blank).
    path: the PNG's path.
    class_names: names of the labels 0..K-1 (default: the labels).
    title: the plot's title.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  labels = sorted({int(c) for o in overlaps.values() for c in o})
  models = list(overlaps)
  grid = np.full((len(models), len(labels)), np.nan)
  col = {c: j for j, c in enumerate(labels)}
  for i, m in enumerate(models):
    for c, v in overlaps[m].items():
      grid[i, col[int(c)]] = float(v)
  fig = Figure(figsize=(1.6 + 0.32 * max(len(labels), 4), 1.4 + 0.3 * max(len(models), 2)))
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  im = ax.imshow(np.ma.masked_invalid(grid), aspect='auto', cmap='viridis')
  ax.set_yticks(np.arange(len(models)), models, fontsize=7)
  names = [class_names[c] if class_names and c < len(class_names) else str(c) for c in labels]
  ax.set_xticks(np.arange(len(labels)), names, fontsize=7, rotation=90)
  ax.set_xlabel('class')
  fig.colorbar(im, ax=ax, label='overlap o_k (higher = more confusable)')
  ax.set_title(title or 'FaCe per-class overlap', fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches='tight')
  return path


def _collapse_label(rows, metric: str) -> str:
  """Legend text of FaCe's C term: which transform of NC1 the rows were scored with."""
  try:
    c = np.array([float(r[f'{metric}.C']) for r in rows])
    nc1 = np.array([float(r[f'{metric}.nc1']) for r in rows])
  except (KeyError, TypeError, ValueError):
    return 'variance collapse C'
  if np.allclose(c, -nc1, rtol=1e-6, atol=1e-12):
    return 'variance collapse C = −NC1'
  with np.errstate(divide='ignore', invalid='ignore'):
    if np.all(nc1 > 0) and np.allclose(c, -np.log(nc1), rtol=1e-6, atol=1e-12):
      return 'variance collapse C = −ln NC1'
  return 'variance collapse C'


# ---------------------------------------------------------------------------------
# Ranking evaluation: tables and the score-vs-truth plot.


def format_markdown_table(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = evaluation.METRICS,
    digits: int = 3,
) -> str:
  """Formats ``evaluation.ranking_table`` rows as a Markdown table: ``est [low, high]`` cells.

  Args:
    rows: rows from ``evaluation.ranking_table``.
    metrics: metric columns to show.
    digits: decimals.

  Returns:
    The table as a string (no trailing newline).
  """

  def cell(row, m):
    est, lo, hi = row[m], row.get(f'{m}_low'), row.get(f'{m}_high')
    s = f'{est:.{digits}f}'
    if lo is not None and hi is not None:
      s += f' [{lo:.{digits}f}, {hi:.{digits}f}]'
    return s

  header = ['name', 'n'] + list(metrics)
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for r in rows:
    cells = [str(r['name']), str(r['n_models'])] + [cell(r, m) for m in metrics]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def plot_scores_vs_truth(
    scores: Mapping[Any, float],
    truth: Mapping[Any, float],
    path: str | os.PathLike[str],
    *,
    score_name: str = 'transferability score',
    truth_name: str = 'fine-tuned accuracy',
    title: str | None = None,
    annotate_models: bool = True,
    dpi: int = 120,
) -> str:
  """Scatter plot of score vs ground truth, annotated with rank correlations (PNG).

  Uses matplotlib's object API with the Agg canvas (no pyplot, no global
  backend change).  The annotation shows the weighted tau, Kendall tau-b and
  Spearman rho, or "undefined" where a statistic is undefined.

  Args:
    scores: mapping model -> score; at least 2 models.
    truth: mapping model -> ground truth with the same models.
    path: output PNG file.
    score_name: x-axis label.
    truth_name: y-axis label.
    title: figure title.
    annotate_models: write each model's name next to its point where there is room
      (a name that would overlap another name or a point is left out).
    dpi: resolution.

  Returns:
    The path written, as str.
  """
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  names, x, y = evaluation.aligned_pair(scores, truth, min_models=2, what='plot_scores_vs_truth')

  def fmt(fn):
    try:
      return f'{fn(x, y):+.3f}'
    except evaluation.UndefinedStatisticError:
      return 'undefined'

  fig = Figure(figsize=(5.0, 4.0), dpi=dpi)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  ax.scatter(x, y, s=28, color='tab:blue', zorder=3)
  ax.set_xlabel(score_name)
  ax.set_ylabel(truth_name)
  ax.grid(True, alpha=0.3)
  # The statistics go above the axes (a box inside would cover points).
  stats_line = (
      f'weighted $\\tau$ = {fmt(evaluation.weighted_tau)}   Kendall $\\tau_b$ = {fmt(evaluation.kendall_tau)}   '
      f'Spearman $\\rho$ = {fmt(evaluation.spearman)}   n = {x.size}'
  )
  ax.set_title(stats_line, fontsize=8)
  if title:
    fig.suptitle(title, fontsize=11)
  fig.tight_layout()
  if annotate_models:
    place_labels(fig, ax, names, x, y)
  path = os.fspath(path)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, format='png')
  return path


def place_labels(fig, ax, names, x, y, *, avoid=(), fontsize: int = 7) -> None:
  """Writes each model's name next to its point without overlapping other names.

  Greedy, in display space: each label tries a few offsets around its point and
  takes the first whose box overlaps no placed label, no point and nothing in
  ``avoid``; a label with no free spot is left out of the plot rather than
  printed over another (the scores themselves are in the CSV/JSON next to it).
  """
  renderer = fig.canvas.get_renderer()
  taken = [a.get_window_extent(renderer).expanded(1.02, 1.05) for a in avoid]
  pts = ax.transData.transform(np.column_stack([x, y]))
  r = 3.0 * fig.dpi / 72.0  # marker radius, pixels
  dots = [(px - r, py - r, px + r, py + r) for px, py in pts]
  axbox = ax.get_window_extent(renderer)
  offsets = [(4, 2), (4, -9), (-4, 2), (-4, -9), (4, 10), (4, -17), (-4, 10), (-4, -17)]
  order = np.argsort(-np.asarray(y), kind='stable')
  for i in order:
    for dx, dy in offsets:
      ann = ax.annotate(
          str(names[i]),
          (x[i], y[i]),
          xytext=(dx, dy),
          textcoords='offset points',
          fontsize=fontsize,
          ha='left' if dx > 0 else 'right',
          va='bottom',
      )
      bb = ann.get_window_extent(renderer)
      inside = bb.x0 >= axbox.x0 and bb.x1 <= axbox.x1 and bb.y0 >= axbox.y0 and bb.y1 <= axbox.y1
      clash = any(bb.overlaps(t) for t in taken) or any(
          bb.x0 < d[2] and bb.x1 > d[0] and bb.y0 < d[3] and bb.y1 > d[1]
          for j, d in enumerate(dots)
          if j != i
      )
      if inside and not clash:
        taken.append(bb)
        break
      ann.remove()
