"""Independent float64 numpy oracles, written straight from docs/face.md (the FaCe specification).

Deliberately naive (explicit per-class covariances, pinv, per-pair solves) and
sharing no code with face_jax.
"""

import math

import numpy as np

EPS = np.finfo(np.float64).eps


def class_stats(x, y, num_classes=None):
  x = np.asarray(x, np.float64)
  y = np.asarray(y)
  k_all = int(y.max()) + 1 if num_classes is None else num_classes
  classes = [c for c in range(k_all) if np.any(y == c)]
  mus = np.stack([x[y == c].mean(0) for c in classes])
  covs = np.stack([np.cov(x[y == c].T, bias=True).reshape(x.shape[1], x.shape[1]) for c in classes])
  counts = np.array([np.sum(y == c) for c in classes], np.float64)
  return classes, mus, covs, counts


def face_oracle(
    x,
    y,
    *,
    weighting='sample',
    vc_transform='neg',
    bc_cov='diagonal',
    fairness='std',
    temperature=0.1,
    fairness_weight=1.0,
    ridge=1e-3,
    num_classes=None,
):
  # Defaults: face_jax's (FaceOptions()), so partial option sets compare alike.
  x = np.asarray(x, np.float64)
  # Every FaCe quantity is shift-invariant; centring first keeps a large common
  # offset's rounding out of the class means (which would otherwise add a
  # spurious K-th singular value to M above the rank cutoff).
  x_mean = x.mean(0)
  x = x - x_mean
  classes, mus, covs, counts = class_stats(x, y, num_classes)
  k, d = mus.shape
  n = counts.sum()
  if weighting == 'balanced':
    mu_g = mus.mean(0)
    sw = covs.mean(0)
  else:
    mu_g = x.mean(0)
    sw = (counts[:, None, None] * covs).sum(0) / n
  sb = sum(np.outer(m - mu_g, m - mu_g) for m in mus) / k
  # NC1 with the spec's rank rule via an explicit pseudo-inverse of Σ_B.
  mmat = (mus - mu_g) / math.sqrt(k)
  u, sv, vt = np.linalg.svd(mmat, full_matrices=False)
  # keep s_j > max(K,D)·ε·max(s_max, max‖μ_k‖): the spec's relative rule plus
  # face_jax's documented floor at the class means' rounding level.
  tol = max(k, d) * EPS * max(sv[0], np.linalg.norm(mus + x_mean, axis=1).max())
  keep = sv > tol
  if not keep.any():
    nc1 = math.inf
  else:
    sb_pinv = (vt[keep].T / sv[keep] ** 2) @ vt[keep]
    nc1 = float(np.trace(sw @ sb_pinv) / k)
    assert np.allclose(mmat.T @ mmat, sb)
  if vc_transform == 'neg':
    c = -nc1
  else:
    c = math.inf if nc1 == 0 else -math.log(nc1)

  dist = np.zeros((k, k))
  if bc_cov == 'pooled':
    reg = sw + ridge * np.trace(sw) / d * np.eye(d)
    for i in range(k):
      for j in range(k):
        delta = mus[i] - mus[j]
        dist[i, j] = delta @ np.linalg.solve(reg, delta) / 8.0
  else:
    v = np.maximum(np.stack([np.diag(cv) for cv in covs]), 1e-4)
    for i in range(k):
      for j in range(k):
        delta = mus[i] - mus[j]
        if bc_cov == 'diagonal':
          vb = (v[i] + v[j]) / 2
          dist[i, j] = np.sum(delta**2 / vb) / 8.0 + 0.5 * np.sum(
              np.log(vb) - (np.log(v[i]) + np.log(v[j])) / 2
          )
        else:
          si, sj = max(v[i].mean(), 1e-4), max(v[j].mean(), 1e-4)
          sb_ = (si + sj) / 2
          dist[i, j] = (delta @ delta) / sb_ / 8.0 + d / 2 * (
              math.log(sb_) - (math.log(si) + math.log(sj)) / 2
          )
  o = np.array([sum(math.exp(-dist[i, j]) for j in range(k) if j != i) / (k - 1) for i in range(k)])
  # ln o_k without underflow: log-add the pairwise −D_B.
  lo = np.array(
      [np.logaddexp.reduce([-dist[i, j] for j in range(k) if j != i]) for i in range(k)]
  ) - math.log(k - 1)
  if fairness == 'std':
    f = -math.sqrt(np.mean((o - o.mean()) ** 2))
  elif fairness == 'range':
    f = -(o.max() - o.min())
  elif fairness == 'cv':
    r = np.exp(lo - lo.max())  # o_k / max o: the ratio std/mean is unchanged
    f = -np.std(r) / np.mean(r)
  elif fairness == 'log_std':
    f = -np.std(lo)
  else:
    p = np.exp(o / temperature)
    p = p / p.sum()
    h = -np.sum(p * np.log(p))
    f = (h - math.log(k)) / math.log(k)
  return {
      'score': c + fairness_weight * f,
      'variance_collapse': c,
      'class_fairness': f,
      'nc1': nc1,
      'overlap': o,
      'log_overlap': lo,
      'mean_overlap': o.mean(),
      'classes': np.array(classes),
  }


def nc1_streaming_oracle(chunks, num_classes, weighting='balanced'):
  """Two-pass float64 NC1 over an iterable factory of (x, y) chunks (for large N)."""
  d = None
  sums, counts, x0 = None, np.zeros(num_classes), None
  for x, y in chunks():
    x = np.asarray(x, np.float64)
    if sums is None:
      d = x.shape[1]
      sums = np.zeros((num_classes, d))
      x0 = x.mean(0)  # work about a fixed point: keeps a large offset out of the means
    np.add.at(sums, y, x - x0)
    counts += np.bincount(y, minlength=num_classes)
  mus = sums / counts[:, None]
  scat = np.zeros((num_classes, d, d))
  for x, y in chunks():
    z = np.asarray(x, np.float64) - x0 - mus[y]
    for c in range(num_classes):
      zc = z[y == c]
      scat[c] += zc.T @ zc
  covs = scat / counts[:, None, None]
  k = num_classes
  if weighting == 'balanced':
    mu_g, sw = mus.mean(0), covs.mean(0)
  else:
    mu_g, sw = (counts[:, None] * mus).sum(0) / counts.sum(), scat.sum(0) / counts.sum()
  mmat = (mus - mu_g) / math.sqrt(k)
  _, sv, vt = np.linalg.svd(mmat, full_matrices=False)
  keep = sv > max(k, d) * EPS * max(sv[0], np.linalg.norm(mus + x0, axis=1).max())
  sb_pinv = (vt[keep].T / sv[keep] ** 2) @ vt[keep]
  return float(np.trace(sw @ sb_pinv) / k)
