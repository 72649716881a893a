"""The plugin's runners and learning-rate schedulers, registered with LAVIS's registry.

``runner_expblip`` / ``runner_expblip_iter`` (:mod:`lavis_ext.runners.base`) and the
schedulers ``expblip_linear_warmup_cosine_lr`` / ``expblip_linear_warmup_step_lr``
(:mod:`lavis_ext.runners.schedulers`). Importing this package registers them; ``import
lavis_ext`` does it as soon as LAVIS is imported.
"""
from lavis_ext.runners import schedulers
from lavis_ext.runners.base import RUNNER, RUNNER_ITER, ExpBlipRunner, ExpBlipRunnerIter

__all__ = ["ExpBlipRunner", "ExpBlipRunnerIter", "RUNNER", "RUNNER_ITER", "schedulers"]
