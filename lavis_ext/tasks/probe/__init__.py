"""The ``probe`` task (paper Tables 3-4), one module per job.

- ``labels``: which classes are probed, and each record's target (or why it has none);
- ``features``: frozen-encoder features, extracted once (shared by DDP ranks) and cached;
- ``data``: the datasets the runner iterates (labelled features, or labelled images);
- ``model``: ``ProbeModel``, the encoder plus a standardised linear head;
- ``text_head``: KE2NT's text-embedding emotion head (and a zero-shot ITC head);
- ``report``: scores and the Table 3/4 files (CSV, markdown, bar chart);
- ``task``: ``ProbeTask``, registered as LAVIS task ``probe``.
"""
from lavis_ext.tasks.probe.model import ProbeModel
from lavis_ext.tasks.probe.task import ProbeTask

__all__ = ["ProbeModel", "ProbeTask"]
