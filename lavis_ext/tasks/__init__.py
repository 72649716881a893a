"""LAVIS tasks of the plugin; importing this package registers them.

- ``facial_captioning``: captioning with the paper's metrics and recognition-from-text.
- ``probe``: linear probe / full fine-tuning on encoder or Q-Former features (Tables 3-4).
"""
from lavis_ext.tasks.facial_captioning import FacialCaptioningTask  # noqa: F401
from lavis_ext.tasks.probe import ProbeModel, ProbeTask  # noqa: F401
