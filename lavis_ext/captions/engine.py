"""Caption synthesis over a list of records: rule kinds, LLM kinds, dry runs and batch jobs.

:func:`synthesize_records` is the library entry point used by the CLI and by the pipeline.
It changes records in place, calls ``save(records)`` every few finished records and once more
on exit or Ctrl-C, so that an interrupted run leaves a valid file that a rerun completes. All
LLM answers go through the SQLite cache first, so a rerun pays only for what is missing.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from lavis_ext.captions import cot, prompts, rules
from lavis_ext.captions.batch import run_batches
from lavis_ext.captions.cache import AnswerCache, cache_key
from lavis_ext.captions.client import (ClientConfig, FatalLLMError, LLMClient, RequestFailed,
                                       Stats)
from lavis_ext.captions.cost import PriceTable, estimate_tokens, format_usd
from lavis_ext.captions.validate import validate_answer
from lavis_ext.data.records import Record, add_captions, present_aus
from lavis_ext.errors import UsageError
from lavis_ext.facs import check_intensity_style

log = logging.getLogger(__name__)

KINDS = ("au-rule", "au-llm", "emotion-rule", "fuse", "concat", "cot-rule", "cot-llm")
LLM_KINDS = ("au-llm", "fuse", "cot-llm")
# Where `fuse` and `concat` look for their inputs, first match wins. "au-pseudo" and
# "emotion-pseudo" are the captions written by a trained AU-BLIP / Emot-BLIP (stage 3).
DEFAULT_AU_KINDS = ("au-llm", "au-pseudo", "au-rule")
# Cat-BLIP joins the rule AU caption (paper §4.3 and supplement); emotion-only images have
# no AU labels, so their AU caption is AU-BLIP's pseudo caption.
CONCAT_AU_KINDS = ("au-rule", "au-pseudo")
DEFAULT_EMOTION_KINDS = ("emotion-rule", "emotion-pseudo")


def default_au_kinds(kind: str) -> tuple[str, ...]:
    """Where ``kind`` looks for AU captions when the caller names none."""
    return CONCAT_AU_KINDS if kind == "concat" else DEFAULT_AU_KINDS
PROMPT_OF_KIND = {"au-llm": "au_caption", "fuse": "fusion", "cot-llm": "cot"}


@dataclass
class Job:
    """One LLM caption to make for one record; ``variant`` picks one of up to K answers to
    the same messages (``ClientConfig.variants``)."""
    record: Record
    messages: list[dict[str, str]]
    variant: int = 0


def _image_rank(image_id: Any) -> str:
    return hashlib.sha256(str(image_id).encode("utf-8")).hexdigest()


def assign_variants(jobs: list[Job], variants: int) -> int:
    """Spread records with identical messages over up to ``variants`` answers.

    Within each group of identical prompts, records are ordered by a hash of their image id
    and take variants 0, 1, ..., K-1, 0, 1, ... in turn: a group of n records gets min(n, K)
    distinct requests, and the same records always get the same variant. Returns the number
    of distinct prompts.
    """
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        text = json.dumps(job.messages, sort_keys=True, ensure_ascii=False)
        groups.setdefault(text, []).append(job)
    for group in groups.values():
        group.sort(key=lambda j: _image_rank(j.record.get("image_id")))
        for rank, job in enumerate(group):
            job.variant = rank % max(1, variants)
    return len(groups)


@dataclass
class SynthesisSummary:
    kind: str
    records: int = 0
    added: int = 0  # records that got a caption of this kind in this run
    already_done: int = 0  # records that had one before the run
    not_applicable: int = 0  # records without the labels this kind needs
    failed: int = 0  # records left with record["failures"][kind]
    interrupted: bool = False
    dry_run: bool = False
    planned_calls: int = 0  # dry run: calls that would be made (cache hits excluded)
    variants: int = 1  # K: answers per identical prompt
    distinct_prompts: int = 0
    estimated_prompt_tokens: int = 0
    estimated_completion_tokens: int = 0
    estimated_cost_usd: float | None = None
    model: str = ""
    elapsed: float = 0.0
    stats: Stats = field(default_factory=Stats)

    def format(self) -> str:
        s = self.stats
        rows = [(f"synthesize {self.kind}", f"{self.records} records"
                 + (" (interrupted: rerun to complete)" if self.interrupted else ""))]
        if self.dry_run:
            rows += [("dry run", "nothing was called or written"),
                     ("calls needed", f"{self.planned_calls} (cache hits excluded)"),
                     ("variants", f"K={self.variants} over {self.distinct_prompts} distinct "
                                  f"prompts"),
                     ("tokens (estimate)", f"in ~{self.estimated_prompt_tokens:,} / out "
                                           f"~{self.estimated_completion_tokens:,}"),
                     ("cost (estimate)", f"{format_usd(self.estimated_cost_usd)} "
                                         f"({self.model})"),
                     ("captions by rule", str(self.added))]
            return "\n".join(f"  {k:<20} {v}" if i else f"{k}: {v}"
                             for i, (k, v) in enumerate(rows))
        rows += [("captions added", str(self.added)), ("already done", str(self.already_done)),
                 ("not applicable", str(self.not_applicable)),
                 ("failed", f"{self.failed}" + (f" (see failures['{self.kind}'])"
                                                if self.failed else ""))]
        if self.kind in LLM_KINDS:
            errors = ", ".join(f"{k}: {n}" for k, n in s.errors.most_common())
            reasons = ", ".join(f"{k}: {n}" for k, n in s.rejections.most_common())
            rows += [("calls made", str(s.calls)), ("cache hits", str(s.cache_hits)),
                     ("retried", f"{s.retried}" + (f" ({errors})" if errors else "")),
                     ("rejected", f"{s.rejected}" + (f" ({reasons})" if reasons else "")),
                     ("tokens", f"in {s.prompt_tokens:,} / out {s.completion_tokens:,}"),
                     ("cost", f"{format_usd(s.cost_usd)} ({self.model})")]
        rate = self.added / self.elapsed if self.elapsed > 0 else 0.0
        rows.append(("elapsed", f"{self.elapsed:.1f} s ({rate:.1f} captions/s)"))
        return "\n".join(f"  {k:<16} {v}" if i else f"{k}: {v}" for i, (k, v) in enumerate(rows))


def _first_caption(record: Record, kinds: tuple[str, ...]) -> str | None:
    by_kind = record.get("captions") or {}
    for kind in kinds:
        texts = [t for t in by_kind.get(kind) or [] if t]
        if texts:
            return texts[0]
    return None


def _caption_pair(record: Record, au_kinds: tuple[str, ...], emotion_kinds: tuple[str, ...],
                  purpose: str) -> tuple[str, str] | ValueError:
    """The record's AU and emotion captions (first kind found), or an error naming what is
    missing; ``concat`` and ``fuse`` both combine such a pair."""
    au_text = _first_caption(record, au_kinds)
    emo_text = _first_caption(record, emotion_kinds)
    missing = [f"no {name} caption{purpose} (looked in {list(kinds)})" for name, kinds, text
               in (("AU", au_kinds, au_text), ("emotion", emotion_kinds, emo_text)) if not text]
    return ValueError(" and ".join(missing)) if missing else (au_text, emo_text)


def _coded(record: Record) -> bool:
    return any(v is not None for v in record["aus"].values())


def _intensities(record: Record) -> dict[int, int] | None:
    raw = record.get("au_intensity") or {}
    return {int(k): int(v) for k, v in raw.items() if v} or None


def _expected(record: Record, kind: str) -> dict[str, Any]:
    """What a cot-llm answer is checked against: the record's AUs and emotion(s)."""
    if kind != "cot-llm":
        return {}
    found = cot.cot_aus(record)
    return {"aus": found[0] if found else [], "emotions": cot.cot_emotions(record)[0]}


def _fail(record: Record, kind: str, reason: str) -> None:
    record.setdefault("failures", {})[kind] = reason
    log.warning("%s: no %s caption: %s", record.get("image_id"), kind, reason)


def _succeed(record: Record, kind: str, text: str) -> None:
    add_captions(record, kind, [text])
    failures = record.get("failures")
    if failures and kind in failures:
        del failures[kind]
        if not failures:
            del record["failures"]


class _Saver:
    """Calls ``save`` every ``every`` finished records or ``interval`` seconds."""

    def __init__(self, save: Callable[[], None] | None, every: int, interval: float):
        self.save, self.every, self.interval = save, max(1, every), interval
        self.pending, self.last = 0, time.monotonic()

    def tick(self) -> None:
        self.pending += 1
        if self.save and (self.pending >= self.every
                          or time.monotonic() - self.last >= self.interval):
            self.flush()

    def flush(self) -> None:
        if self.save:
            self.save()
        self.pending, self.last = 0, time.monotonic()


def _rule_caption(record: Record, kind: str, au_kinds: tuple[str, ...],
                  emotion_kinds: tuple[str, ...], template: str | None, intensity: str | None,
                  prompt_dir: str | None) -> str | None | Exception:
    if kind == "au-rule":
        if not _coded(record):
            return None
        aus = present_aus(record)
        if not aus:  # paper §3.1: "If no AUs are labeled, we use a predetermined description"
            return rules.neutral_au_caption(prompt_dir)
        return rules.au_caption(aus, template=template,
                                intensities=_intensities(record) if intensity else None,
                                style=intensity or "adverb",
                                prompt_dir=prompt_dir)
    if kind == "emotion-rule":
        labels = (record.get("meta") or {}).get("labels")
        if (template is None and record.get("dataset") == "faceme"
                and isinstance(labels, Mapping)
                and any(rules.is_action_group(group) for group in labels)):
            return rules.faceme_caption(labels, prompt_dir=prompt_dir)
        return rules.emotion_caption(record["emotions"], template=template,
                                     prompt_dir=prompt_dir)
    if kind == "cot-rule":  # ExpLLM's three parts; levels whenever au_intensity has them
        return cot.record_cot_caption(record)
    if kind == "concat":
        pair = _caption_pair(record, au_kinds, emotion_kinds, "")
        if isinstance(pair, ValueError):
            return pair
        return rules.concat_caption(*pair, prompt_dir=prompt_dir)
    raise ValueError(f"unknown rule kind {kind!r}")


def prompt_choice(config: ClientConfig) -> prompts.PromptChoice:
    """Where a run's LLM prompts come from (set, folder or files of the client config)."""
    return prompts.PromptChoice(config.prompt_set, config.prompt_dir, config.au_prompt,
                                config.fusion_prompt)


def _plan_llm(record: Record, kind: str, au_kinds: tuple[str, ...],
              emotion_kinds: tuple[str, ...], choice: prompts.PromptChoice,
              prompt_dir: str | None) -> list[dict[str, str]] | str | None | Exception:
    """Messages to send, a fixed caption (no call needed), None (not applicable) or an error."""
    if kind == "au-llm":
        if not _coded(record):
            return None
        aus = present_aus(record)
        return prompts.au_messages(aus, choice) if aus else rules.neutral_au_caption(
            prompt_dir)
    if kind == "cot-llm":  # every record with AUs to observe gets a call, one at rest too
        found = cot.cot_aus(record)
        if found is None:
            return None
        return prompts.cot_messages(found[0], cot.cot_emotions(record)[0], choice,
                                    levels=found[1])
    pair = _caption_pair(record, au_kinds, emotion_kinds, " to fuse")
    if isinstance(pair, ValueError):
        return pair
    return prompts.fusion_messages(*pair, choice)


def synthesize_records(records: list[Record], kind: str, *,
                       client_config: ClientConfig | None = None,
                       cache_path: str | Path | None = None, concurrency: int = 8,
                       dry_run: bool = False, progress: bool = True,
                       prices: PriceTable | None = None,
                       save: Callable[[list[Record]], None] | None = None,
                       save_every: int = 100, save_interval: float = 30.0,
                       au_kinds: tuple[str, ...] | None = None,
                       emotion_kinds: tuple[str, ...] = DEFAULT_EMOTION_KINDS,
                       template: str | None = None, intensity: bool | str | None = None,
                       batch: bool = False, batch_poll: float = 30.0,
                       batch_max_requests: int = 50_000,
                       echo: Callable[[str], None] = print) -> SynthesisSummary:
    """Add captions of one kind to records (in place) and return what was done and spent.

    LLM kinds need ``cache_path``. ``save`` is called with the records periodically and on
    exit (also after Ctrl-C, which sets ``summary.interrupted``). With ``dry_run`` nothing is
    called or changed: the summary holds the calls, tokens and cost that a run would need.
    ``intensity`` (au-rule): None (off), ``"adverb"`` or ``"degree"`` (``facs``'s A-E words),
    from each record's ``au_intensity``.
    """
    if kind not in KINDS:
        raise UsageError(f"unknown synthesis kind {kind!r}; expected one of {KINDS}")
    intensity = check_intensity_style(intensity)
    au_kinds = tuple(au_kinds) if au_kinds else default_au_kinds(kind)
    config = client_config or ClientConfig()
    summary = SynthesisSummary(kind=kind, records=len(records), dry_run=dry_run,
                               model=config.model)
    prices = prices or PriceTable.load()
    saver = _Saver((lambda: save(records)) if save and not dry_run else None, save_every,
                   save_interval)
    started = time.monotonic()
    try:
        if kind in LLM_KINDS:
            if cache_path is None:
                raise ValueError(f"kind {kind!r} calls an LLM and needs a cache_path")
            coro = _run_llm(records, kind, config, Path(cache_path), concurrency, dry_run,
                            progress, prices, saver, summary, au_kinds, emotion_kinds, batch,
                            batch_poll, batch_max_requests, echo)
            try:
                asyncio.run(coro)
            except KeyboardInterrupt:
                summary.interrupted = True
        else:
            _run_rules(records, kind, dry_run, progress, saver, summary, au_kinds,
                       emotion_kinds, template, intensity, config.prompt_dir)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        summary.elapsed = time.monotonic() - started
        saver.flush()
    return summary


def _progress(total: int, enabled: bool, kind: str):
    from tqdm.auto import tqdm
    return tqdm(total=total, disable=not enabled, unit="rec", desc=kind, dynamic_ncols=True)


def _run_rules(records: list[Record], kind: str, dry_run: bool, progress: bool, saver: _Saver,
               summary: SynthesisSummary, au_kinds: tuple[str, ...],
               emotion_kinds: tuple[str, ...], template: str | None, intensity: str | None,
               prompt_dir: str | None) -> None:
    with _progress(len(records), progress, kind) as bar:
        for record in records:
            bar.update(1)
            if (record.get("captions") or {}).get(kind):
                summary.already_done += 1
                continue
            result = _rule_caption(record, kind, au_kinds, emotion_kinds, template, intensity,
                                   prompt_dir)
            if result is None:
                summary.not_applicable += 1
            elif isinstance(result, Exception):
                summary.failed += 1
                if not dry_run:
                    _fail(record, kind, str(result))
            else:
                summary.added += 1
                if not dry_run:
                    _succeed(record, kind, result)


async def _run_llm(records: list[Record], kind: str, config: ClientConfig, cache_path: Path,
                   concurrency: int, dry_run: bool, progress: bool, prices: PriceTable,
                   saver: _Saver, summary: SynthesisSummary, au_kinds: tuple[str, ...],
                   emotion_kinds: tuple[str, ...], batch: bool, batch_poll: float,
                   batch_max_requests: int, echo: Callable[[str], None]) -> None:
    prompt_name = PROMPT_OF_KIND[kind]
    choice = prompt_choice(config)
    prompt = prompts.load_prompt(prompt_name, choice)
    prompt_params = prompts.prompt_params(prompt_name, choice)
    bounds = {"min_chars": int(prompt.get("min_chars", 20)),
              "max_chars": int(prompt.get("max_chars", 1200))}
    jobs: list[Job] = []
    for record in records:
        if (record.get("captions") or {}).get(kind):
            summary.already_done += 1
            continue
        plan = _plan_llm(record, kind, au_kinds, emotion_kinds, choice, config.prompt_dir)
        if plan is None:
            summary.not_applicable += 1
        elif isinstance(plan, Exception):
            summary.failed += 1
            if not dry_run:
                _fail(record, kind, str(plan))
        elif isinstance(plan, str):  # the fixed no-AU description
            summary.added += 1
            if not dry_run:
                _succeed(record, kind, plan)
        else:
            jobs.append(Job(record, plan))

    summary.distinct_prompts = assign_variants(jobs, config.variants)
    summary.variants = config.variants
    cache = AnswerCache(cache_path) if not dry_run or cache_path.exists() else None
    try:
        if dry_run:
            _dry_run(jobs, config, cache, prompt_params, prompt, prices, summary, echo)
            return
        assert cache is not None
        client = LLMClient(config, cache, prices, summary.stats, concurrency=concurrency)
        try:
            if batch and jobs:
                requests = {}
                for job in jobs:
                    params = config.request_params(prompt_params, 0, job.variant)
                    requests[client.key(job.messages, params, job.variant)] = (job.messages,
                                                                               params)
                await run_batches(client, requests, poll_interval=batch_poll,
                                  max_requests=batch_max_requests, echo=echo)
            await _run_jobs(jobs, kind, client, config, prompt_params, bounds, concurrency,
                            progress, saver, summary)
        finally:
            await client.close()
    finally:
        if cache is not None:
            cache.close()


def _dry_run(jobs: list[Job], config: ClientConfig, cache: AnswerCache | None,
             prompt_params: dict[str, Any], prompt: dict[str, Any], prices: PriceTable,
             summary: SynthesisSummary, echo: Callable[[str], None]) -> None:
    params = config.request_params(prompt_params, 0)
    keys: dict[str, Job] = {}
    for job in jobs:
        keys.setdefault(cache_key(config.model, job.messages,
                                  config.request_params(prompt_params, 0, job.variant),
                                  job.variant), job)
    cached = cache.contains(keys) if cache is not None else set()
    todo = [job for key, job in keys.items() if key not in cached]
    summary.planned_calls = len(todo)
    summary.estimated_prompt_tokens = sum(
        estimate_tokens(m["content"]) + 4 for job in todo for m in job.messages)
    summary.estimated_completion_tokens = len(todo) * int(prompt.get("expected_output_tokens",
                                                                     100))
    summary.estimated_cost_usd = prices.cost(config.model, summary.estimated_prompt_tokens,
                                             summary.estimated_completion_tokens)
    echo(f"dry run: {len(todo)} calls to {config.model} at "
         f"{config.resolved_base_url() or 'https://api.openai.com/v1'} with {params}; "
         f"{len(cached)} answered by the cache, {len(jobs) - len(keys)} duplicates")
    echo(f"variants K={config.variants}: {len(jobs)} records, {summary.distinct_prompts} "
         f"distinct prompts, {len(keys)} requests "
         f"({len(keys) / max(1, summary.distinct_prompts):.2f} distinct answers per prompt)")
    for i, job in enumerate(todo[:3]):
        echo(f"--- call {i + 1}/{len(todo)} for {job.record.get('image_id')} ---")
        for message in job.messages:
            echo(f"[{message['role']}] {message['content']}")
    if len(todo) > 3:
        echo(f"--- and {len(todo) - 3} more calls (image ids: "
             f"{', '.join(str(j.record.get('image_id')) for j in todo[3:8])}, ...) ---")


async def _run_jobs(jobs: list[Job], kind: str, client: LLMClient, config: ClientConfig,
                    prompt_params: dict[str, Any], bounds: dict[str, int], concurrency: int,
                    progress: bool, saver: _Saver, summary: SynthesisSummary) -> None:
    queue: asyncio.Queue[Job] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    stats = summary.stats

    async def caption(job: Job) -> None:
        reasons = []
        for attempt in range(max(1, config.answer_attempts)):
            params = config.request_params(prompt_params, attempt, job.variant)
            try:
                answer = await client.complete(job.messages, params, job.variant)
            except RequestFailed as err:
                summary.failed += 1
                _fail(job.record, kind, f"request failed: {err}")
                return
            verdict = validate_answer(answer.text, kind, **bounds, **_expected(job.record, kind))
            if verdict.ok:
                summary.added += 1
                _succeed(job.record, kind, verdict.text)
                return
            stats.rejected += 1
            stats.rejections[verdict.reason.split(" (")[0]] += 1
            reasons.append(verdict.reason)
            if not answer.cached:
                client.cache.add_rejection(answer.key, verdict.reason)
            log.info("%s: answer rejected (%s)", job.record.get("image_id"), verdict.reason)
        summary.failed += 1
        _fail(job.record, kind, f"all {len(reasons)} answers rejected: " + "; ".join(reasons))

    with _progress(summary.records, progress, kind) as bar:
        bar.update(summary.records - len(jobs))

        async def worker() -> None:
            while not queue.empty():
                job = queue.get_nowait()
                await caption(job)
                bar.update(1)
                saver.tick()

        workers = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
        try:
            await asyncio.gather(*workers)
        except FatalLLMError:
            for task in workers:
                task.cancel()
            raise
