"""Train with LAVIS's stock runner, with the lavis_ext plugin registered.

    python train.py --cfg-path projects/exp_blip/stage2.yaml [--options run.max_epoch=2 ...]
    python -m torch.distributed.run --nproc_per_node=4 train.py --cfg-path projects/exp_blip/stage2.yaml

It behaves like the ``train.py`` of the LAVIS repository; the code lives in ``lavis_ext.entry``.
"""
import sys

from lavis_ext.entry import build_runner, parse_args, run, train_main as main  # noqa: F401

if __name__ == "__main__":
    sys.exit(main())
