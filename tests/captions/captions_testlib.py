"""Helpers shared by the caption synthesis tests: generated records, fast client settings."""
from __future__ import annotations

import random

from lavis_ext.captions.client import ClientConfig
from lavis_ext.captions.local_server import LocalLLMServer
from lavis_ext.data.records import new_record
from lavis_ext.facs import AU_NUMBERS, EMOTION_NAMES

SECRET = "sk-test-DO-NOT-LEAK-0123456789abcdef"


def au_records(n: int, seed: int = 0, *, neutral_every: int = 0) -> list[dict]:
    """AU-labelled records with distinct AU sets; every ``neutral_every``-th has no AU."""
    rng = random.Random(seed)
    records, seen = [], set()
    while len(records) < n:
        i = len(records)
        if neutral_every and i % neutral_every == neutral_every - 1:
            present: set[int] = set()
        else:
            present = set(rng.sample(AU_NUMBERS, rng.randint(1, 5)))
            if frozenset(present) in seen:
                continue
            seen.add(frozenset(present))
        aus = {str(a): int(a in present) for a in AU_NUMBERS}
        records.append(new_record(f"img/{i}.jpg", f"au-{i}", "rafau", "train", aus=aus))
    return records


def emotion_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [new_record(f"emo/{i}.jpg", f"emo-{i}", "rafdb", "train",
                       emotions=rng.sample(EMOTION_NAMES, rng.randint(1, 2))) for i in range(n)]


def fast_config(server: LocalLLMServer, **kw) -> ClientConfig:
    """Tiny back-offs, so fault tests take a fraction of a second. The timeout is generous: a
    healthy answer must never time out, even on a loaded 2-core machine; tests of timeouts
    set their own, well below the injected stall."""
    options = dict(model="gpt-4o-mini", base_url=server.base_url, backoff_base=0.01,
                   backoff_max=0.05, timeout=10.0, max_attempts=5)
    options.update(kw)
    return ClientConfig(**options)
