"""Run ``train.main`` with the toy plugin registered (for ``torch.distributed.run`` tests).

    python -m torch.distributed.run --nproc_per_node=2 tests/compat/launch_toy_train.py --cfg-path X
"""
from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

import compat_toy  # noqa: E402,F401  (registers the toy model, dataset and task)
import train  # noqa: E402

if __name__ == "__main__":
    sys.exit(train.main(sys.argv[1:]))
