"""Registration of the group-A baselines (see ``metrics_a`` and docs/baselines.md).

Importing this module registers ``nc1``, ``vci``, ``logme``, ``leep``, ``nce``,
``hscore``, ``reg_hscore``, ``transrate`` and ``gbc`` in the metric registry.
"""

from __future__ import annotations

from face_jax._src import registry
from face_jax._src.baselines import metrics_a as m

_SOURCE = frozenset({'source_probs'})

registry.register(registry.MetricInfo(
    name='nc1',
    plan=m.nc1_plan,
    defaults=dict(m.NC1_DEFAULTS),
    higher_is_better=False,
    citation='Papyan, Han & Donoho, Prevalence of neural collapse during the terminal phase of '
             'deep learning training, PNAS 2020; FACE_SPEC.md definition (weighting="balanced"); '
             'weighting="sample" = nc1_papyan, weighting="sample", centering="class_mean" = '
             'rhubarbwu/neural-collapse@c05a0b80d6bc6e8e2e102f2180f1f33b2c9605fd '
             'neural_collapse/measure.py::covariance_ratio(..., "pinv")',
    summary='NC1 = Tr(Σ_W Σ_B^†)/K, lower = more collapsed; 1 pass of Moments (2 for balanced '
            'weighting on a stream with unknown unequal class counts)',
))

registry.register(registry.MetricInfo(
    name='vci',
    plan=m.vci_plan,
    defaults={},
    higher_is_better=False,
    citation='Xu & Liu, Quantifying the Variability Collapse of Neural Networks, ICML 2023',
    summary='VCI = 1 − Tr(Σ_T^† Σ_B)/rank(Σ_B) in [0, 1], lower = more collapsed; 1 pass of Moments',
))

registry.register(registry.MetricInfo(
    name='logme',
    plan=m.logme_plan,
    defaults=dict(m.LOGME_DEFAULTS),
    higher_is_better=True,
    citation='You et al., LogME, ICML 2021 / JMLR 2022; variant="thuml": '
             'thuml/LogME@56551ca94a3295bcc37e6a01b1291911af985f07 LogME.py::LogME.fit; '
             'variant="tllib_icml": thuml/Transfer-Learning-Library@'
             'c4aa59eb565650a552b809411601d0589efbbfe4 tllib/ranking/logme.py::log_maximum_evidence',
    summary='LogME log maximum evidence of a Bayesian linear model (not shift-invariant); '
            '1 pass of Moments (XᵀX rebuilt in float64)',
))

registry.register(registry.MetricInfo(
    name='leep',
    plan=m.leep_plan,
    defaults={},
    higher_is_better=True,
    citation='Nguyen et al., LEEP, ICML 2020; thuml/LogME@56551ca94a3295bcc37e6a01b1291911af985f07 '
             'LEEP.py::LEEP',
    summary='LEEP (natural log) from source-model probabilities; 2 passes: joint P(y, z), then '
            'Σ log Σ_z θ_iz P(y_i|z)',
    needs=_SOURCE,
))

registry.register(registry.MetricInfo(
    name='nce',
    plan=m.nce_plan,
    defaults={},
    higher_is_better=True,
    citation='Tran et al., Transferability and Hardness of Supervised Classification Tasks, '
             'ICCV 2019; thuml/LogME@56551ca94a3295bcc37e6a01b1291911af985f07 NCE.py::NCE',
    summary='NCE = −H(Y|Z), Z = argmax source probabilities; 1 pass of hard joint counts',
    needs=_SOURCE,
))

registry.register(registry.MetricInfo(
    name='hscore',
    plan=m.hscore_plan,
    defaults={},
    higher_is_better=True,
    citation='Bao et al., An Information-Theoretic Approach to Transferability in Task Transfer '
             'Learning, ICIP 2019; thuml/Transfer-Learning-Library@'
             'c4aa59eb565650a552b809411601d0589efbbfe4 tllib/ranking/hscore.py::h_score',
    summary='H-score tr(pinv(cov_f) cov_g) (true matrix product, pinv rcond 1e-15); 1 pass of Moments',
))

registry.register(registry.MetricInfo(
    name='reg_hscore',
    plan=m.reg_hscore_plan,
    defaults={},
    higher_is_better=True,
    citation='Ibrahim et al., Newer is not always better, ECML-PKDD 2022; '
             'thuml/Transfer-Learning-Library@c4aa59eb565650a552b809411601d0589efbbfe4 '
             'tllib/ranking/hscore.py::regularized_h_score',
    summary='Ledoit–Wolf shrinkage H-score; 1 pass of Moments + NormMoments (fourth-moment sums)',
))

registry.register(registry.MetricInfo(
    name='transrate',
    plan=m.transrate_plan,
    defaults=dict(m.TRANSRATE_DEFAULTS),
    higher_is_better=True,
    citation='Huang et al., Frustratingly Easy Transferability Estimation, ICML 2022; '
             'thuml/Transfer-Learning-Library@c4aa59eb565650a552b809411601d0589efbbfe4 '
             'tllib/ranking/transrate.py::transrate',
    summary='TransRate (tllib formula, eps=1e-4); 1 pass of ClassScatter (K·D² memory)',
))

registry.register(registry.MetricInfo(
    name='gbc',
    plan=m.gbc_plan,
    defaults=dict(m.GBC_DEFAULTS),
    higher_is_better=True,
    citation='Pandy et al., Transferability Estimation using Bhattacharyya Class Separability, '
             'CVPR 2022; google-research/google-research@1d4d2f1aa6f2883a790d2ae46a6ee8ab150d8f31 '
             'stable_transfer/transferability/gbc.py::get_gbc_score',
    summary='GBC = −Σ_{a≠b} Bhattacharyya coefficients of class Gaussians; 1 pass of Moments, '
            '2 with pca_dim (top-k axes, then moments of float32 projections)',
))
