"""Registration of the multi-pass and subsample baselines: sfda, ncti, etran, nleep, parc.

See docs/baselines_multipass.md for the definitions, passes, memory and the
differences from the reference implementations.
"""

from __future__ import annotations

import dataclasses

from face_jax._src import registry
from face_jax._src.baselines import etran
from face_jax._src.baselines import ncti
from face_jax._src.baselines import sfda
from face_jax._src.baselines import subsample


def _defaults(options_cls) -> dict:
  return {f.name: f.default for f in dataclasses.fields(options_cls)}


def _plan(plan_fn, options_cls):
  return lambda info, options, dtype: plan_fn(info, options_cls(**options), dtype)


registry.register(registry.MetricInfo(
    name='sfda',
    plan=_plan(sfda.sfda_plan, sfda.SfdaOptions),
    defaults=_defaults(sfda.SfdaOptions),
    higher_is_better=True,
    citation='Shao et al., Not All Models Are Equal: Predicting Model Transferability in a '
             'Self-challenging Fisher Space, ECCV 2022; TencentARC/SFDA@'
             '3b7edf76bd682acb1eba4f4c5eb7ea7f3f7f6c59 metrics.py::SFDA_Score',
    summary='SFDA: mean true-class posterior of a shrunk LDA refitted on ConfMix-mixed features '
            '(3 passes; float in (0, 1])',
))

registry.register(registry.MetricInfo(
    name='ncti',
    plan=_plan(ncti.ncti_plan, ncti.NctiOptions),
    defaults=_defaults(ncti.NctiOptions),
    higher_is_better=True,
    citation='Wang et al., How Far Pre-trained Models Are from Neural Collapse on the Target '
             'Dataset Informs their Transferability, ICCV 2023; BUserName/NCTI@'
             'b18d39514a3f2a7a949500b467a38b93de1428e4 metrics.py::NCTI_Score',
    summary='NCTI components (S_seli, S_ncc, vc) after exact PCA-64 and LDA (2 passes); the score '
            'is face_jax.ncti_pool over a pool of models',
    pool_relative=True,
))

registry.register(registry.MetricInfo(
    name='etran',
    plan=_plan(etran.etran_plan, etran.EtranOptions),
    defaults=_defaults(etran.EtranOptions),
    higher_is_better=True,
    citation='Gholami et al., ETran: Energy-Based Transferability Estimation, ICCV 2023; '
             'mgholamikn/ETran@d4551ed8f41f4ed6eba08b9cc1a78bae178acd19 '
             'metrics.py::LDA_Score, Energy_Score',
    summary='ETran components (s_cls, s_en): nearest-mean classifier posterior and the mean of '
            'the 0.5% lowest energies (exact radix select; 2 passes); the score is '
            'face_jax.etran_pool over a pool of models',
    pool_relative=True,
))

registry.register(registry.MetricInfo(
    name='nleep',
    plan=_plan(subsample.nleep_plan, subsample.NleepOptions),
    defaults=_defaults(subsample.NleepOptions),
    higher_is_better=True,
    citation='Li et al., Ranking Neural Checkpoints, CVPR 2021; google-research/google-research@'
             '4963f325fe8bf41c69aeb2717d0ef408f623500e stable_transfer/transferability/nleep.py',
    summary='NLEEP: LEEP with a 5C-component Gaussian mixture on PCA(80% variance) features, '
            'fitted on a seeded row subsample (SubsampleResult)',
))

registry.register(registry.MetricInfo(
    name='parc',
    plan=_plan(subsample.parc_plan, subsample.ParcOptions),
    defaults=_defaults(subsample.ParcOptions),
    higher_is_better=True,
    citation='Bolya et al., Scalable Diverse Model Selection for Accessible Transfer Learning, '
             'NeurIPS 2021; dbolya/parc@ddfca43a84d35328897d107d6f86e860b11801ce methods.py::PARC',
    summary='PARC (x100): Spearman correlation of the feature and label dissimilarity matrices '
            'after PCA-32, on a seeded row subsample (SubsampleResult)',
))
