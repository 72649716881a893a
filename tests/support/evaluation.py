"""One evaluation step of a project YAML, as `evaluate.py` runs its task and dataset sections:
the tests of projects/eval put a tiny model and tiny data in place of the real ones."""
from types import SimpleNamespace
from typing import Any

import torch
from lavis.common.config import Config
from lavis.common.registry import registry


def evaluate_once(cfg: Any, model: torch.nn.Module, dataset: str = "facial_caption_mix"
                  ) -> dict[str, Any]:
    """Build the config's task and test split, caption it in one batch, score it; returns
    ``after_evaluation``'s metrics (the scores JSON lands in ``run.result_dir``)."""
    task = registry.get_task_class(cfg.run.task).setup_task(cfg=SimpleNamespace(run_cfg=cfg.run))
    # as LAVIS's Config does: the builder's default config under the file's dataset section
    datasets_cfg = Config.build_dataset_config(cfg).datasets
    test = task.build_datasets(SimpleNamespace(datasets_cfg=datasets_cfg))[dataset]["test"]
    task.before_evaluation(model=model, dataset=test)
    loader = torch.utils.data.DataLoader(test, batch_size=len(test), collate_fn=test.collater)
    results = task.evaluation(model, loader, cuda_enabled=False)
    return task.after_evaluation(val_result=results, split_name="test", epoch="best")
