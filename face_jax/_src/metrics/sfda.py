"""SFDA (self-challenging Fisher discriminant analysis) on the streaming engine: 3 passes.

Shao et al., "Not All Models Are Equal: Predicting Model Transferability in a
Self-challenging Fisher Space", ECCV 2022; reference
TencentARC/SFDA@3b7edf76bd682acb1eba4f4c5eb7ea7f3f7f6c59
``metrics.py :: SFDA_Score(X, y)`` (with ``utils.py :: iterative_A``).
In-memory oracle: ``face_jax.dense.sfda``.

Synopsis::

    face_jax.score(features, labels, metrics=('sfda',))['sfda']   # float in (0, 1]

Passes (each takes the previous pass's finalised parameters):

1. ``stats.Moments`` (class counts, means, within-class scatter S_W).  On the
   host: Sw = S_W / N, λ = 3-step power iteration on Sw (start: row sums),
   shrinkage s = max(exp(−5λ), 1e-10), Sw_s = (1 − s) Sw + s (tr Sw / D) I and
   the LDA  logit_c(x) = (x − g)ᵀ Sw_s⁻¹ μ_c − ½ μ_cᵀ Sw_s⁻¹ μ_c + log π_c
   (μ_c centred on the global mean g; the softmax is shift-invariant).
2. ``ConfMixMoments``: class moments of the ConfMix-mixed features
   x'_i = w_i (x_i − g) + (1 − w_i) m̄_{y_i}, w_i = softmax_c(P_i)[y_i] (a
   softmax of the pass-1 probabilities P_i), m̄_c = mean of the other classes'
   means; computed per sample on device.  On the host: the same shrunk LDA
   refitted on x' with the same s.
3. ``LinearPosterior`` (ConfMix applied again on device): Σ_i P'_i[y_i] of the
   refitted LDA on x'_i.  SFDA = that sum / N (a mean probability, no log).

Memory: the pass-1/2 moments (2KD + K + D² elements) and 2K for pass 3.
Reference defect (README pitfall 11): the reference overwrites the caller's X;
this never modifies anything.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from face_jax._src import engine as engine_lib
from face_jax._src import registry
from face_jax._src import stats as stats_lib
from face_jax._src.metrics import common
from face_jax._src.metrics import posterior
from face_jax._src.numerics import power_largest_eig, solve_spd

SFDA_POWER_ITERS = 3  # power-iteration steps for the largest eigenvalue of Sw
SFDA_SHRINK_FLOOR = 1e-10  # shrinkage = max(exp(-5 lambda), 1e-10)
# A direction is dead (constant features) when its total scatter is at most this fraction of
# sqrt(D)·eps(dtype)·λ_max (``constant_directions``): measured on the bundled zoo, a dead
# direction's float32 total scatter is at most 7e-3 of that bound (the compensated sums leave
# only the per-batch products' rounding), a live one at least 0.14 of it or exactly 0.
SFDA_DEAD_FRACTION = 0.1


@dataclasses.dataclass(frozen=True)
class SfdaOptions:
  """SFDA has no options (the reference's constants: 3 power steps, floor 1e-10)."""


@dataclasses.dataclass(frozen=True)
class ConfMixSpec(stats_lib.MomentsSpec):
  """Static configuration of ``ConfMixMoments``: ``MomentsSpec``'s fields (a distinct type)."""


class ConfMixMoments(stats_lib.Moments):
  """``stats.Moments`` of SFDA's ConfMix-mixed features (SFDA pass 2).

  params: those of ``Moments`` (``shift`` [K, D] in the centred coordinates,
  ``weight`` [K]) plus ``center`` [D], ``mix_coef`` [D, K], ``mix_bias`` [K],
  ``valid`` [K], ``mbar`` [K, D] (see ``posterior.confmix``).  Finalises to
  ``ClassMoments`` of x'_i (centred coordinates).
  """

  @classmethod
  def prepare(cls, spec: ConfMixSpec, params, batch: stats_lib.Batch) -> stats_lib.Batch:
    xc, y, _ = posterior.centred_rows(spec, params, batch)
    mixed = posterior.confmix(xc, y, params)
    return stats_lib.Batch(mixed, batch.labels, batch.mask, batch.extras)


def denoise_scatter(within: np.ndarray, dtype: str) -> np.ndarray:
  """Zeroes the eigenvalues of a streamed scatter matrix that lie below its rounding noise.

  A scatter accumulated in ``dtype`` carries entry errors of about eps(dtype)
  times its largest eigenvalue, so its spectrum is only known to about
  ``sqrt(D) · eps(dtype) · λ_max`` (the spectral norm of such a noise matrix);
  eigenvalues below that (including the negative ones rounding creates in the
  null space of a rank-deficient scatter, N ≤ D) are set to 0, their exact
  value when the scatter is singular.  Applied to float32 accumulations only:
  in float64 the matrix is used as is, exactly as ``face_jax.dense``.
  """
  if np.dtype(dtype) == np.float64:
    return within
  w, v = np.linalg.eigh(0.5 * (within + within.T))
  tol = math.sqrt(within.shape[0]) * float(np.finfo(np.dtype(dtype)).eps) * max(float(w[-1]), 0.0)
  w = np.where(w > tol, w, 0.0)
  return (v * w) @ v.T


def constant_directions(moments: stats_lib.ClassMoments, dtype: str) -> np.ndarray | None:
  """[D, D] projector onto the directions in which the features vary, or None if all do.

  A direction whose total scatter is at the accumulation dtype's rounding noise
  (eigenvalue ≤ ``SFDA_DEAD_FRACTION · sqrt(D) · eps(dtype) · λ_max`` of the total
  scatter) is one in which every sample has the same value: a constant or dead
  feature.  In exact arithmetic it contributes nothing to SFDA
  (the class means agree in it, so 0 times the inverse of its shrunk variance).
  In float32 the class means differ in it by rounding noise, which the shrinkage
  (down to 1e-10) amplifies into the logits: the score then depends on the
  summation order (measured on a zoo model with one dead feature, D = 64,
  N = 111: 0.59 to 0.90 over batch sizes, 0.918 in float64).  Such directions
  are projected out of the means and scatters (float32 accumulation only; in
  float64 nothing changes, exactly as ``face_jax.dense``).
  """
  if np.dtype(dtype) == np.float64:
    return None
  w, v = moments.total_scatter_eig
  tol = SFDA_DEAD_FRACTION * math.sqrt(w.shape[0]) * float(np.finfo(np.dtype(dtype)).eps)
  dead = w <= tol * max(float(w[0]), 0.0)
  if not dead.any():
    return None
  v0 = v[:, dead]
  return np.eye(w.shape[0]) - v0 @ v0.T


def _project(p: np.ndarray | None, mu: np.ndarray, within: np.ndarray):
  """(mu P, P within P) with the projector P (unchanged when P is None)."""
  if p is None:
    return mu, within
  return mu @ p, p @ within @ p


def shrunk_lda(
    mu: np.ndarray, within: np.ndarray, counts: np.ndarray, shrinkage: float | None
) -> tuple[np.ndarray, np.ndarray, float]:
  """SFDA's shrunk LDA from class moments (host, float64).

  Args:
    mu: [C, D] class means (any common origin; the softmax is shift-invariant).
    within: [D, D] Σ_i (x_i − μ_{y_i})(x_i − μ_{y_i})ᵀ.
    counts: [C] class sizes (all > 0).
    shrinkage: None to estimate it (power iteration), else the value to use.

  Returns:
    (coef [D, C] = Sw_s⁻¹ μᵀ, bias [C] = −½ diag(μ Sw_s⁻¹ μᵀ) + log π, shrinkage).
  """
  n = counts.sum()
  d = mu.shape[1]
  sw = within / n
  if shrinkage is None:
    lam = power_largest_eig(sw, SFDA_POWER_ITERS)
    shrinkage = max(math.exp(-5.0 * lam), SFDA_SHRINK_FLOOR)
  sw_s = (1.0 - shrinkage) * sw
  sw_s[np.diag_indices(d)] += shrinkage * float(np.trace(sw)) / d
  a_mu = solve_spd(sw_s, mu.T)
  bias = -0.5 * np.einsum('cd,dc->c', mu, a_mu) + np.log(counts / n)
  return a_mu, bias, shrinkage


def sfda_plan(info: engine_lib.StreamInfo, options: SfdaOptions, dtype: str = 'float32'):
  """The SFDA pass plan (3 passes; see the module docstring).  Returns a float."""
  del options
  k = info.num_classes
  fin = (yield {'moments': common.moments_request(info, dtype)})['moments']
  present = common.populated_classes(fin.counts, 'sfda')
  counts = fin.counts[present]
  n = counts.sum()
  g = fin.global_mean()
  mu = fin.means[present] - g  # [C, D] centred
  keep = constant_directions(fin, dtype)
  mu, within = _project(keep, mu, denoise_scatter(fin.within_scatter, dtype))
  coef, bias, shrink = shrunk_lda(mu, within, counts, None)
  c = mu.shape[0]
  mbar = (mu.sum(0)[None, :] - mu) / (c - 1)
  mix = {
      'center': g,
      'mix_coef': common.embed_classes(coef, present, 1),
      'mix_bias': common.embed_classes(bias, present, 0),
      'valid': present.astype(np.float64),
      'mbar': common.embed_classes(mbar, present, 0),
  }

  spec2 = ConfMixSpec(num_classes=k, dim=info.dim, dtype=dtype)
  params2 = dict(mix, shift=common.embed_classes(mu, present, 0), weight=np.ones((k,)))
  fin2 = (yield {'confmix': engine_lib.Request(ConfMixMoments, spec2, params2)})['confmix']
  mu2, within2 = _project(keep, fin2.means[present], denoise_scatter(fin2.within_scatter, dtype))
  coef2, bias2, _ = shrunk_lda(mu2, within2, counts, shrink)

  spec3 = posterior.PosteriorSpec(num_classes=k, dim=info.dim, dtype=dtype, confmix=True)
  params3 = dict(
      mix,
      coef=common.embed_classes(coef2, present, 1),
      bias=common.embed_classes(bias2, present, 0),
  )
  post = yield {'posterior': engine_lib.Request(posterior.LinearPosterior, spec3, params3)}
  return float(post['posterior'].true_prob.sum() / n)


registry.register(
    registry.MetricInfo(
        name='sfda',
        plan=sfda_plan,
        options=SfdaOptions,
        higher_is_better=True,
        citation='Shao et al., Not All Models Are Equal: Predicting Model Transferability in a '
        'Self-challenging Fisher Space, ECCV 2022; TencentARC/SFDA@'
        '3b7edf76bd682acb1eba4f4c5eb7ea7f3f7f6c59 metrics.py::SFDA_Score',
        summary='SFDA: mean true-class posterior of a shrunk LDA refitted on ConfMix-mixed features '
        '(3 passes; float in (0, 1])',
    )
)
