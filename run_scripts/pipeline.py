"""Kept for old instructions: the pipeline is `expblip pipeline --config FILE` now.

    python run_scripts/pipeline.py --config projects/pipeline/paper.yaml [--check] [--until STEP]
"""
import sys

from lavis_ext.cli import main

if __name__ == "__main__":
    sys.exit(main(["pipeline", *sys.argv[1:]]))
