"""Evaluate a trained model with LAVIS's stock runner, with the lavis_ext plugin registered.

Behaves like the ``evaluate.py`` of the LAVIS repository: same arguments as ``train.py``
(``--cfg-path``, ``--options key=value``), same start-up (process group, seeds, logger, task,
datasets, model, ``run.runner``), then ``runner.evaluate(skip_reload=True)`` on
``run.test_splits`` with the weights the model configuration loads (``model.finetuned`` with
``load_finetuned: True``, for example).

    python evaluate.py --cfg-path my_eval.yaml --options model.load_finetuned=True model.finetuned=ckpt.pth
"""
from __future__ import annotations

import sys
from lavis_ext.entry import evaluate_main as main  # noqa: F401


if __name__ == "__main__":
    sys.exit(main())
