"""lavis_ext: a LAVIS plugin that turns BLIP-2 into a facial-expression captioner.

Importing the package applies the LAVIS 1.0.2 compatibility fixes (``lavis_ext.compat``) and
registers the plugin's models, dataset builders and tasks with LAVIS's registry.
"""
from lavis_ext import compat as _compat

_compat.apply_all()

from lavis_ext import processors as _processors  # noqa: E402,F401  (registers processors)
from lavis_ext import datasets as _datasets  # noqa: E402,F401  (registers builders)
from lavis_ext import models as _models  # noqa: E402,F401  (registers models)
from lavis_ext import tasks as _tasks  # noqa: E402,F401  (registers tasks)

__version__ = "0.1.0"
