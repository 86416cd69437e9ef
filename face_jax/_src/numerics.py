"""Shared host-side float64 maths of the metrics and of ``face_jax.dense`` (one copy).

Everything here is plain NumPy/SciPy on host arrays: the finalisation of the
streamed metrics (``face_jax._src.metrics``) and the in-memory oracles
(``face_jax.dense``) call the same functions, so the two can only differ by
the statistics they start from.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.special

# Machine epsilon of float64: the unit of every numerical-rank rule (D·ε₆₄·λ_max, ...).
EPS64 = float(np.finfo(np.float64).eps)

# A ``source_probs`` row is a probability vector when its entries are finite,
# >= 0 and |Σ_z p_z − 1| <= PROBS_SUM_ATOL.  The engine's on-device check sums
# each row in float32 (where a softmax row of a thousand classes sums to 1 only
# within about 1e-5), and ``face_jax.dense`` checks the float64 sum with the
# same tolerance (raised to Cs·eps(dtype) for float32/float16 input).
PROBS_SUM_ATOL = 1e-4


def sym_eig_desc(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Eigen-decomposition of a symmetric matrix [D, D], eigenvalues descending.

  Returns:
    (w [D] descending, v [D, D] with the matching eigenvectors as columns).
  """
  w, v = np.linalg.eigh(0.5 * (a + a.T))
  return w[::-1], v[:, ::-1]


def pinv_trace(
    a: np.ndarray | None,
    b: np.ndarray,
    rtol: float,
    max_rank: int | None = None,
    *,
    eig: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[float, int]:
  """(trace(pinv(a) @ b), rank kept) for symmetric ``a``, ``b`` [D, D].

  Eigenpairs of ``a`` with |λ| > rtol·max|λ| are kept (numpy/torch ``pinv``
  with that ``rcond``/``rtol``: for a symmetric matrix the singular values are
  the |λ|); at most ``max_rank`` of them, the largest (a known rank bound).
  ``eig``: a's eigenpairs (w descending, v) when already known (``a`` unused).
  """
  w, v = sym_eig_desc(a) if eig is None else eig
  aw = np.abs(w)
  if aw.max() == 0.0:
    return 0.0, 0
  keep = aw > rtol * aw.max()
  if max_rank is not None:
    keep &= np.argsort(-aw, kind='stable').argsort() < max_rank
  vk = v[:, keep]
  # trace(V diag(1/w) Vᵀ b) = Σ_k (v_kᵀ b v_k) / w_k
  quad = np.sum(vk * (b @ vk), axis=0)
  return float(np.sum(quad / w[keep])), int(keep.sum())


def solve_spd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Solves a x = b for a symmetric positive definite ``a`` [D, D] (Cholesky).

  Falls back to a symmetric-indefinite (LDLᵀ) solve if rounding makes the
  Cholesky factorisation fail on a nearly singular matrix.
  """
  try:
    return scipy.linalg.solve(a, b, assume_a='pos')
  except np.linalg.LinAlgError:
    return scipy.linalg.solve(a, b, assume_a='sym')


def power_largest_eig(a: np.ndarray, iters: int) -> float:
  """SFDA's estimate of the largest eigenvalue of a symmetric PSD matrix [D, D].

  x = row sums of a; ``iters`` times: y = a x / ‖a x‖, x = a y / ‖a y‖;
  returns xᵀ a y.
  """
  x = a.sum(axis=1)
  yv = x
  for _ in range(iters):
    t = a @ x
    yv = t / np.linalg.norm(t)
    t = a @ yv
    x = t / np.linalg.norm(t)
  return float(x @ a @ yv)


def softmax_rows(logits: np.ndarray) -> np.ndarray:
  """Row-wise softmax of [N, C] logits."""
  return scipy.special.softmax(logits, axis=1)


def nuclear_norm(a: np.ndarray) -> float:
  """Σ singular values of a [m, n] (0 for an empty matrix)."""
  if a.size == 0:
    return 0.0
  return float(np.sum(np.linalg.svd(a, compute_uv=False)))


def sqrt_eig_sum(gram: np.ndarray) -> float:
  """Σ sqrt(eig(G)) of a PSD Gram matrix [n, n] = the nuclear norm of any A with AᵀA = G."""
  if gram.size == 0:
    return 0.0
  w = np.linalg.eigvalsh(0.5 * (gram + gram.T))
  return float(np.sqrt(np.clip(w, 0.0, None)).sum())


def bhattacharyya_sum(mu: np.ndarray, var: np.ndarray, gaussian_type: str) -> float:
  """Σ_{a≠b} exp(−BD(a, b)) over ordered pairs of diagonal class Gaussians (GBC = −this).

  With v̄ = (v_a + v_b)/2, BD = (1/8) Σ_j (μ_aj − μ_bj)²/v̄_j + (1/2)[Σ_j log v̄_j −
  (1/2)Σ_j log v_aj − (1/2)Σ_j log v_bj].  ``"spherical"`` first replaces v_c by
  the scalar mean_j v_cj, and its log term is that one scalar term, not
  multiplied by D (the google-research GBC formula).

  Args:
    mu: [K, D] class means.
    var: [K, D] per-dimension class variances (already floored; > 0).
    gaussian_type: ``"spherical"``, or anything else for ``"diagonal"``.

  Returns:
    The sum, in [0, K(K − 1)].
  """
  k = mu.shape[0]
  total = 0.0
  if gaussian_type == 'spherical':
    sv = var.mean(axis=1)  # [K]
    logs = np.log(sv)
    for a in range(k):
      d2 = np.sum((mu - mu[a]) ** 2, axis=1)  # [K]
      vbar = 0.5 * (sv + sv[a])
      bd = d2 / vbar / 8.0 + 0.5 * (np.log(vbar) - 0.5 * logs[a] - 0.5 * logs)
      e = np.exp(-bd)
      e[a] = 0.0
      total += float(e.sum())
  else:
    logs = np.log(var).sum(axis=1)  # [K]
    for a in range(k):
      vbar = 0.5 * (var + var[a])  # [K, D]
      bd = np.sum((mu - mu[a]) ** 2 / vbar, axis=1) / 8.0 + 0.5 * (
          np.log(vbar).sum(axis=1) - 0.5 * logs[a] - 0.5 * logs
      )
      e = np.exp(-bd)
      e[a] = 0.0
      total += float(e.sum())
  return total
