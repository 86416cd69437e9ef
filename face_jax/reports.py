"""Writing results: JSON, CSV, a ranked text table and a plot (an edge module: it does IO).

Synopsis::

    rows = reports.ranking_rows({'model_a': result_a, 'model_b': result_b})
    print(reports.format_table(rows))
    reports.write_json(path, {'models': rows}); reports.write_csv(path, rows)
    reports.plot_ranking(rows, 'ranking.png')
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np


def jsonable(obj: Any) -> Any:
  """Converts results to strict-JSON values (non-finite floats become the strings 'inf', '-inf', 'nan')."""
  if hasattr(obj, 'to_dict'):
    return jsonable(obj.to_dict())
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return jsonable(dataclasses.asdict(obj))
  if isinstance(obj, Mapping):
    return {str(k): jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [jsonable(v) for v in obj]
  if isinstance(obj, np.ndarray):
    return jsonable(obj.tolist())
  if isinstance(obj, (np.integer,)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    v = float(obj)
    if math.isnan(v):
      return 'nan'
    if math.isinf(v):
      return 'inf' if v > 0 else '-inf'
    return v
  return obj


def write_json(path: str, obj: Any) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(jsonable(obj), f, indent=1, allow_nan=False)
    f.write('\n')
  return path


def _scalar(v):
  if hasattr(v, 'score'):
    return v.score
  return v


def ranking_rows(results: Mapping[str, Mapping[str, Any]], *, rank_by: str = 'face',
                 truth: Mapping[str, float] | None = None) -> list[dict]:
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
  widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c)
            for i, c in enumerate(cols)]
  line = lambda vals: '  '.join(v.rjust(w) if i != 1 else v.ljust(w)
                                for i, (v, w) in enumerate(zip(vals, widths)))
  out = [line(cols), line(['-' * w for w in widths])]
  out += [line(row) for row in cells]
  return '\n'.join(out)


def plot_ranking(rows: Sequence[Mapping[str, Any]], path: str, *, metric: str = 'face',
                 title: str | None = None) -> str:
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
  ax.set_title(title or f'{metric} ranking (higher = predicted more transferable)', fontsize=10,
               pad=title_pad)
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
