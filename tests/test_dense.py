"""Tests of face_jax.dense against the reference fixtures and independent formulas.

Fixtures: tests/fixtures/reference (copied from the shared reference set, see
its PROVENANCE.md). Each metric is compared with the value that the authors'
public reference implementation produced on each case.
"""

import functools
import json
import math
import pathlib

import numpy as np
import pytest
import scipy.special
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from face_jax import dense

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "reference"
CASES = ("gauss_small", "wide", "imbalanced_offset", "many_classes")


@functools.lru_cache(maxsize=None)
def _case(name):
  with np.load(FIXTURES / "cases" / f"{name}.npz") as d:
    arrays = {k: d[k] for k in ("X", "y", "probs")}
  for a in arrays.values():
    a.setflags(write=False)  # any accidental in-place write raises
  with open(FIXTURES / "expected" / f"{name}.json") as f:
    expected = json.load(f)
  return arrays, expected


# METRIC_KEY -> (function of (X, y, probs), relative tolerance of the brief).
METRICS = {
    "logme_thuml": (lambda X, y, P: dense.logme(X, y), 1e-6),
    "logme_tllib_icml": (lambda X, y, P: dense.logme(X, y, variant="tllib_icml"), 1e-6),
    "leep_thuml": (lambda X, y, P: dense.leep(P, y), 1e-8),
    "nce_thuml": (lambda X, y, P: dense.nce(P, y), 1e-8),
    "hscore_tllib": (lambda X, y, P: dense.hscore(X, y), 1e-6),
    "reg_hscore_tllib": (lambda X, y, P: dense.reg_hscore(X, y), 1e-6),
    "transrate_tllib": (lambda X, y, P: dense.transrate(X, y), 1e-6),
    "gbc_google_spherical_nopca_f64": (lambda X, y, P: dense.gbc(X, y), 1e-6),
    "gbc_google_diagonal_nopca_f64": (
        lambda X, y, P: dense.gbc(X, y, gaussian_type="diagonal"),
        1e-6,
    ),
    "gbc_google_spherical_pca64_f32": (lambda X, y, P: dense.gbc(X, y, pca_dim=64), 1e-3),
    "sfda": (lambda X, y, P: dense.sfda(X, y), 1e-4),
    "ncti_components": (lambda X, y, P: dense.ncti_components(X, y), 1e-4),
    "etran_components": (lambda X, y, P: dense.etran_components(X, y), 1e-4),
    "nc1_rhubarbwu_pinv": (lambda X, y, P: dense.nc1(X, y), 1e-8),
    "nc1_papyan": (lambda X, y, P: dense.nc1(X, y, centering="sample_mean"), 1e-8),
    "nleep_google": (lambda X, y, P: dense.nleep(X, y), 0.05),
    "parc_dbolya": (lambda X, y, P: dense.parc(X, P, y), 0.02),
}

# Tighter agreement actually reached on this platform (float64 metrics agree
# to rounding; the float32 PCA path and the mixture model to their own noise).
TIGHT = {
    "gbc_google_spherical_pca64_f32": 1e-5,
    "nleep_google": 1e-3,
    "parc_dbolya": None,  # checked against the generator's alternatives below
}
TIGHT_DEFAULT = 1e-9


def _params(with_value_only=False):
  out = []
  for case in CASES:
    _, exp = _case(case)
    for key in METRICS:
      entry = exp["metrics"][key]
      if entry["value"] is None and "fixture policy" in entry.get("skip_reason", ""):
        continue  # the reference was not run for cost reasons: nothing to compare
      if with_value_only and entry["value"] is None:
        continue
      out.append(pytest.param(case, key, id=f"{case}-{key}"))
  return out


@functools.lru_cache(maxsize=None)
def _computed(case, key):
  arrays, _ = _case(case)
  return METRICS[key][0](arrays["X"], arrays["y"], arrays["probs"])


def _rel_err(got, want):
  got = np.atleast_1d(np.asarray(got, np.float64))
  want = np.atleast_1d(np.asarray(want, np.float64))
  assert got.shape == want.shape
  return float(np.max(np.abs(got - want) / np.abs(want)))


@pytest.mark.parametrize("case,key", _params())
def test_matches_reference(case, key):
  _, exp = _case(case)
  entry = exp["metrics"][key]
  if entry["value"] is None:
    # The reference itself fails on this case (PCA-64 with D < 64, a degenerate
    # mixture model): ours must refuse with a clear ValueError, not return junk.
    with pytest.raises(ValueError):
      _computed(case, key)
    return
  tol = METRICS[key][1]
  assert _rel_err(_computed(case, key), entry["value"]) <= tol


@pytest.mark.parametrize(
    "case,key",
    [p for p in _params(with_value_only=True) if TIGHT.get(p.values[1], TIGHT_DEFAULT) is not None],
)
def test_matches_reference_tightly(case, key):
  _, exp = _case(case)
  entry = exp["metrics"][key]
  tol = TIGHT.get(key, TIGHT_DEFAULT)
  assert _rel_err(_computed(case, key), entry["value"]) <= tol


@pytest.mark.parametrize("case", CASES[:3])
def test_parc_alternatives_and_reference_label_rdm(case):
  arrays, exp = _case(case)
  X, y = arrays["X"], arrays["y"]
  entry = exp["metrics"]["parc_dbolya"]
  alt = entry["alternatives_fixture_generator"]
  # Exact 0 / C/(C-1) label ties, same randomized PCA as the reference.
  assert dense.parc(X, None, y) == pytest.approx(alt["exact_label_ties"], rel=1e-7)
  # Exact ties + exact (full SVD) PCA.
  assert dense.parc(X, None, y, pca_solver="full") == pytest.approx(
      alt["exact_label_ties_full_pca"], rel=1e-7
  )
  # Literal 1 - corrcoef(one-hot) as the reference: which same-class pairs get
  # 0 or ~1e-16 depends on the BLAS build and threads, so only the brief's 2 %
  # (on this platform it reproduces the reference to ~1e-12).
  lit = dense.parc(X, arrays["probs"], y, label_rdm="corrcoef")
  assert lit == pytest.approx(entry["value"], rel=0.02)


@pytest.mark.parametrize("case", CASES)
def test_sanity_keys(case):
  arrays, exp = _case(case)
  X, y = arrays["X"], arrays["y"]
  m = exp["metrics"]
  c = exp["case"]["C"]
  assert X.shape == (exp["case"]["N"], exp["case"]["D"])
  assert np.bincount(y, minlength=c).tolist() == m["class_counts"]["value"]
  checksum = sum(X[y == k].mean(axis=0).sum() for k in range(c))
  atol = 1e-9 if exp["case"]["offset"] else 0.0
  assert checksum == pytest.approx(m["class_means_checksum"]["value"], rel=1e-12, abs=atol)
  np.testing.assert_allclose(arrays["probs"].sum(axis=1), 1.0, atol=1e-12)


# ---------------------------------------------------------------------------
# Independent straightforward formulas on random data
# ---------------------------------------------------------------------------


def _data(seed, n, d, c, sep=0.5, offset=0.0, balanced=True):
  rng = np.random.default_rng(seed)
  if balanced:
    y = np.arange(n) % c
  else:
    weights = np.arange(1, c + 1) / (c * (c + 1) / 2)  # class k has weight (k+1)
    y = np.concatenate([np.arange(c), rng.choice(c, n - c, p=weights)])
  mu = rng.normal(0, sep, (c, d))
  X = mu[y] + rng.normal(size=(n, d)) * np.exp(rng.normal(size=d) * 0.3) + offset
  logits = X @ rng.normal(size=(d, 7)) * 0.3
  return X, y, scipy.special.softmax(logits, axis=1)


def _vci_straightforward(X, y):
  n = len(y)
  c = y.max() + 1
  g = X.mean(axis=0)
  st = np.cov(X.T, bias=True)
  sb = np.zeros_like(st)
  for k in range(c):
    d = X[y == k].mean(axis=0) - g
    sb += (y == k).sum() / n * np.outer(d, d)
  return 1.0 - np.trace(np.linalg.pinv(st) @ sb) / np.linalg.matrix_rank(sb)


@pytest.mark.parametrize(
    "n,d,c,balanced",
    [(300, 20, 5, True), (400, 30, 12, False), (40, 60, 4, True), (500, 8, 30, False)],
)
def test_vci_matches_straightforward_formula(n, d, c, balanced):
  X, y, _ = _data(n + d, n, d, c, sep=0.3, offset=2.0, balanced=balanced)
  got = dense.vci(X, y)
  assert got == pytest.approx(_vci_straightforward(X, y), rel=1e-8, abs=1e-12)
  assert -1e-12 <= got <= 1.0 + 1e-12


def test_vci_properties():
  X, y, _ = _data(3, 500, 10, 4, sep=0.4)
  v = dense.vci(X, y)
  assert 0.0 < v < 1.0
  # Affine invariance (full-rank map) and shift invariance.
  a = np.random.default_rng(5).normal(size=(10, 10))
  assert dense.vci(X @ a + 7.0, y) == pytest.approx(v, rel=1e-9)
  # Perfect collapse: every sample at its class mean -> VCI = 0.
  mu = np.random.default_rng(6).normal(size=(4, 10))
  assert dense.vci(mu[y], y) == pytest.approx(0.0, abs=1e-12)
  with pytest.raises(ValueError, match="class means"):
    dense.vci(np.ones((20, 3)), np.arange(20) % 2)


@pytest.mark.parametrize("n,d,c", [(200, 10, 4), (50, 80, 5)])
def test_hscores_match_straightforward_formulas(n, d, c):
  X, y, _ = _data(n, n, d, c, offset=3.0, balanced=False)
  covf = np.cov(X, rowvar=False)
  g = np.zeros_like(X)
  for k in range(c):
    g[y == k] = X[y == k].mean(axis=0)
  covg = np.cov(g, rowvar=False)
  want = np.trace(np.linalg.pinv(covf, rtol=1e-15) @ covg)
  assert dense.hscore(X, y) == pytest.approx(want, rel=1e-7)
  xc = X - X.mean(axis=0)
  lw = LedoitWolf(assume_centered=False).fit(xc)
  want = np.trace(np.linalg.pinv(lw.covariance_, rtol=1e-15) @ ((1 - lw.shrinkage_) * covg))
  assert dense.reg_hscore(X, y) == pytest.approx(want, rel=1e-7)


def test_leep_nce_match_straightforward_loops():
  X, y, P = _data(11, 120, 5, 3)
  n, cs = P.shape
  joint = np.zeros((3, cs))
  for i in range(n):
    joint[y[i]] += P[i] / n
  cond = joint / joint.sum(axis=0)
  want = np.mean([math.log(sum(P[i, z] * cond[y[i], z] for z in range(cs))) for i in range(n)])
  assert dense.leep(P, y) == pytest.approx(want, rel=1e-12)
  z = P.argmax(axis=1)
  h = 0.0
  for zz in np.unique(z):
    pz = np.mean(z == zz)
    for yy in range(3):
      p = np.mean(y[z == zz] == yy)
      if p > 0:
        h -= pz * p * math.log(p)
  assert dense.nce(P, y) == pytest.approx(-h, rel=1e-12)


@pytest.mark.parametrize("gaussian_type", ["spherical", "diagonal"])
def test_gbc_matches_pairwise_loop(gaussian_type):
  X, y, _ = _data(21, 150, 6, 4, sep=1.0, balanced=False)
  X[:, 0] = 1.0  # a constant column: its variance is floored at 1e-4
  stats = []
  for k in range(4):
    xk = X[y == k]
    v = np.maximum(xk.var(axis=0), 1e-4)
    stats.append((xk.mean(axis=0), v.mean() if gaussian_type == "spherical" else v))
  total = 0.0
  for a in range(4):
    for b in range(4):
      if a != b:
        (ma, va), (mb, vb) = stats[a], stats[b]
        vbar = (va + vb) / 2
        bd = np.sum((ma - mb) ** 2 / vbar) / 8 + 0.5 * (
            np.sum(np.log(vbar)) - 0.5 * np.sum(np.log(va)) - 0.5 * np.sum(np.log(vb))
        )
        total += math.exp(-bd)
  assert dense.gbc(X, y, gaussian_type=gaussian_type) == pytest.approx(-total, rel=1e-10)
  assert -12.0 <= -total <= 0.0


@pytest.mark.parametrize("scale", [1.0, 0.03])
def test_ncti_matches_sklearn_lda_both_solvers(scale):
  # scale 1.0: top-32 PCA variance is large -> shrinkage floor -> 'svd' solver;
  # scale 0.03: small variances -> 'eigen' solver with shrinkage exp(-sum).
  X, y, _ = _data(31, 300, 70, 5, sep=0.25, balanced=False)
  X = X * scale
  pca = PCA(n_components=64, random_state=1)
  f = pca.fit_transform(X)
  temp = max(math.exp(-pca.explained_variance_[:32].sum()), 1e-10)
  assert (temp == 1e-10) == (scale == 1.0)
  clf = (
      LinearDiscriminantAnalysis(solver="svd")
      if temp == 1e-10
      else LinearDiscriminantAnalysis(solver="eigen", shrinkage=temp)
  )
  h = clf.fit_transform(f, y)
  h = h - h.mean(axis=0)
  p = clf.predict_proba(f)
  want = (
      np.linalg.norm(h, "nuc"),
      p[np.arange(len(y)), y].mean(),
      math.log(sum(np.linalg.norm(p[y == k], "nuc") for k in range(5))),
  )
  got = dense.ncti_components(X, y)
  assert 0.3 < got[1] < 0.99  # not saturated
  np.testing.assert_allclose(got, want, rtol=1e-9)


def test_etran_components_straightforward_and_shift():
  X, y, _ = _data(41, 400, 12, 6, sep=0.4, balanced=False)
  n = len(y)
  mu = np.stack([X[y == k].mean(axis=0) for k in range(6)])
  pri = np.bincount(y) / n
  logits = X @ mu.T - 0.5 * (mu**2).sum(axis=1) + np.log(pri)
  s_cls = scipy.special.softmax(logits, axis=1)[np.arange(n), y].mean()
  s_en = np.sort(scipy.special.logsumexp(X, axis=1))[:2].mean()  # k = 5*400//1000 = 2
  got = dense.etran_components(X, y)
  np.testing.assert_allclose(got, (s_cls, s_en), rtol=1e-12)
  shifted = dense.etran_components(X + 10.0, y)
  assert shifted[0] == pytest.approx(got[0], rel=1e-10)
  assert shifted[1] == pytest.approx(got[1] + 10.0, rel=1e-12)
  with pytest.raises(ValueError, match="N >= 200"):
    dense.etran_components(X[:150], y[:150])


def test_nc1_matches_numpy_pinv():
  X, y, _ = _data(51, 300, 25, 6, balanced=False)
  c, n, d = 6, len(y), X.shape[1]
  mu = np.stack([X[y == k].mean(axis=0) for k in range(c)])
  sw = sum(np.outer(X[i] - mu[y[i]], X[i] - mu[y[i]]) for i in range(n)) / n
  for centering, g in (("class_mean", mu.mean(axis=0)), ("sample_mean", X.mean(axis=0))):
    sb = (mu - g).T @ (mu - g) / c
    want = np.trace(sw @ np.linalg.pinv(sb, rtol=d * np.finfo(float).eps)) / c
    assert dense.nc1(X, y, centering=centering) == pytest.approx(want, rel=1e-9)


# ---------------------------------------------------------------------------
# Invariances, purity, input handling
# ---------------------------------------------------------------------------

_ROW_ORDER_FREE = [k for k in METRICS if k not in ("nleep_google", "parc_dbolya")]


def test_row_order_and_no_mutation():
  X, y, P = _data(61, 250, 70, 4, sep=0.3, balanced=False)
  perm = np.random.default_rng(0).permutation(len(y))
  X0, y0, P0 = X.copy(), y.copy(), P.copy()
  for key in _ROW_ORDER_FREE:
    fn = METRICS[key][0]
    a = fn(X, y, P)
    b = fn(X[perm], y[perm], P[perm])
    np.testing.assert_allclose(a, b, rtol=1e-7, err_msg=key)
  dense.parc(X, P, y)
  dense.nleep(X, y, n_components_factor=2)
  dense.vci(X, y)
  np.testing.assert_array_equal(X, X0)
  np.testing.assert_array_equal(y, y0)
  np.testing.assert_array_equal(P, P0)


def test_sfda_does_not_modify_input():
  arrays, exp = _case("gauss_small")
  X = arrays["X"].copy()
  before = X.copy()
  want = exp["metrics"]["sfda"]["value"]
  assert dense.sfda(X, arrays["y"]) == pytest.approx(want, rel=1e-12)
  np.testing.assert_array_equal(X, before)
  # A second call gives the same value (the reference's would not, on a shared X).
  assert dense.sfda(X, arrays["y"]) == pytest.approx(want, rel=1e-12)


def test_logme_variants_differ_when_n_le_d():
  arrays, exp = _case("wide")
  assert dense.logme(arrays["X"], arrays["y"]) == pytest.approx(1.614492066, rel=1e-9)
  assert dense.logme(arrays["X"], arrays["y"], variant="tllib_icml") == pytest.approx(
      0.1039088901, rel=1e-9
  )


def test_nleep_degenerate_mixture_is_a_clear_error():
  arrays, _ = _case("wide")
  with pytest.raises(ValueError, match="GaussianMixture"):
    dense.nleep(arrays["X"], arrays["y"])


_XY_FUNCS = {
    "logme": dense.logme,
    "hscore": dense.hscore,
    "reg_hscore": dense.reg_hscore,
    "transrate": dense.transrate,
    "gbc": dense.gbc,
    "sfda": dense.sfda,
    "ncti_components": dense.ncti_components,
    "etran_components": dense.etran_components,
    "nleep": dense.nleep,
    "nc1": dense.nc1,
    "vci": dense.vci,
    "parc": lambda X, y: dense.parc(X, None, y),
}


def _bad_inputs():
  X, y, _ = _data(71, 300, 70, 3)
  Xn = X.copy()
  Xn[3, 4] = np.nan
  Xi = X.copy()
  Xi[0, 0] = np.inf
  y_missing = y.copy()
  y_missing[y_missing == 1] = 2
  return [
      ("1-D X", X[:, 0], y, "2-D"),
      ("NaN in X", Xn, y, "NaN or infinite"),
      ("inf in X", Xi, y, "NaN or infinite"),
      ("complex X", X.astype(np.complex128), y, "real-valued"),
      ("short y", X, y[:-1], "rows"),
      ("2-D y", X, y[:, None], "1-D"),
      ("float y", X, y.astype(np.float64), "integer"),
      ("negative y", X, np.where(y == 0, -1, y), ">= 0"),
      ("missing class", X, y_missing, "classes without samples"),
      ("one class", X, np.zeros_like(y), "two classes"),
  ]


@pytest.mark.parametrize("name", list(_XY_FUNCS))
def test_input_errors_feature_metrics(name):
  fn = _XY_FUNCS[name]
  for what, X, y, msg in _bad_inputs():
    with pytest.raises(ValueError, match=msg):
      fn(X, y)
    try:
      fn(X, y)
    except ValueError as e:
      assert name.split("_")[0] in str(e), (what, str(e))


def test_input_errors_probability_metrics():
  _, y, P = _data(81, 60, 4, 3)
  for fn in (dense.leep, dense.nce):
    with pytest.raises(ValueError, match="got None"):
      fn(None, y)
    with pytest.raises(ValueError, match="sum to 1"):
      fn(P * 1.01, y)
    bad = P.copy()
    bad[0, 0] = -1e-3
    bad[0, 1] += 1e-3
    with pytest.raises(ValueError, match="negative"):
      fn(bad, y)
    with pytest.raises(ValueError, match="rows"):
      fn(P[:-1], y)
    with pytest.raises(ValueError, match="2-D"):
      fn(P[0], y)
    # Rows summing to 1 within the documented tolerance (PROBS_SUM_ATOL) are accepted.
    ok = P.copy()
    ok[:, 0] += 5e-7
    assert np.isfinite(fn(ok, y))
    # float32 rows are accepted within Cs * eps(float32) (1.2e-5 for Cs = 100).
    p32 = scipy.special.softmax(np.random.default_rng(0).normal(size=(60, 100)), axis=1).astype(
        np.float32
    )
    assert np.isfinite(fn(p32 + np.float32(5e-6) * (np.arange(100) == 0), y))
    with pytest.raises(ValueError, match="sum to 1"):
      fn(p32 * np.float32(1.001), y)
  X, y, P = _data(81, 60, 40, 3)
  with pytest.raises(ValueError, match="sum to 1"):
    dense.parc(X, P * 2.0, y)


def test_option_errors():
  X, y, _ = _data(91, 100, 40, 3)
  with pytest.raises(ValueError, match="variant"):
    dense.logme(X, y, variant="google")
  with pytest.raises(ValueError, match="gaussian_type"):
    dense.gbc(X, y, gaussian_type="full")
  with pytest.raises(ValueError, match="pca_dim=64"):
    dense.gbc(X, y, pca_dim=64)  # D = 40 < 64: documented error, no fallback
  with pytest.raises(ValueError, match="pca_dim=64"):
    dense.ncti_components(X, y)
  with pytest.raises(ValueError, match="centering"):
    dense.nc1(X, y, centering="median")
  with pytest.raises(ValueError, match="eps"):
    dense.transrate(X, y, eps=0.0)
  with pytest.raises(ValueError, match="pca_variance"):
    dense.nleep(X, y, pca_variance=1.5)
  with pytest.raises(ValueError, match="pca_solver"):
    dense.parc(X, None, y, pca_solver="arpack")
  with pytest.raises(ValueError, match="label_rdm"):
    dense.parc(X, None, y, label_rdm="spearman")
  with pytest.raises(ValueError, match="D = 20"):
    dense.parc(X[:, :20], None, y)
  # Explicit smaller PCA dimensions are allowed.
  assert np.isfinite(dense.gbc(X, y, pca_dim=16))
  assert all(np.isfinite(dense.ncti_components(X, y, pca_dim=40)))


# ---------------------------------------------------------------------------
# Pool-relative scores
# ---------------------------------------------------------------------------


def test_pool_minmax_by_hand():
  comps = {"a": {"u": 1.0, "v": 10.0}, "b": {"u": 3.0, "v": 10.0}, "c": {"u": 2.0, "v": 10.0}}
  got = dense.pool_minmax(comps, {"u": 2.0, "v": -1.0})
  assert list(got) == ["a", "b", "c"]
  # u -> 0, 1, 0.5; v is constant -> 0.
  assert got == pytest.approx({"a": 0.0, "b": 2.0, "c": 1.0})
  assert dense.pool_minmax({"only": {"u": 5.0}}, {"u": 1.0}) == {"only": 0.0}


def test_ncti_and_etran_pools():
  ncti = {"m1": (100.0, 0.5, 4.0), "m2": (300.0, 0.9, 5.0), "m3": (200.0, 0.7, 3.0)}
  got = dense.ncti_pool(ncti)
  # seli_n = 0, 1, .5; ncc_n = 0, 1, .5; vc_n = .5, 1, 0.
  assert got == pytest.approx({"m1": -0.5, "m2": 1.0, "m3": 1.0})
  etran = {"m1": (0.5, 4.0), "m2": (0.9, 2.0), "m3": (0.7, 3.0)}
  got = dense.etran_pool(etran)
  assert got == pytest.approx({"m1": 0.15, "m2": 0.85, "m3": 0.5})
  # Mappings with named components are accepted too.
  assert dense.etran_pool({k: {"s_cls": a, "s_en": b} for k, (a, b) in etran.items()}) == got


def test_pool_errors():
  with pytest.raises(ValueError, match="empty"):
    dense.pool_minmax({}, {"u": 1.0})
  with pytest.raises(ValueError, match="'bad_model'.*not finite|not finite.*'bad_model'"):
    dense.pool_minmax({"ok": {"u": 1.0}, "bad_model": {"u": float("nan")}}, {"u": 1.0})
  with pytest.raises(ValueError, match="'m2' has no component 'v'"):
    dense.pool_minmax({"m1": {"u": 1.0, "v": 2.0}, "m2": {"u": 1.0}}, {"u": 1.0, "v": 1.0})
  with pytest.raises(ValueError, match="'m9'.*not finite"):
    dense.etran_pool({"m1": (0.5, 1.0), "m9": (0.4, float("inf"))})
  with pytest.raises(ValueError, match="expected 3"):
    dense.ncti_pool({"m1": (1.0, 2.0)})
