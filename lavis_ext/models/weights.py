"""One resolver for every pretrained part: config key, then environment variable, then cache,
then a download when the network is allowed.

The manifest (``PARTS``) says, per part, which config key and variable name it, where it is
published (a URL or a hub id) and roughly how big it is. File parts are cached where LAVIS's
own ``download_cached_file`` puts them (``torch.hub.get_dir()/checkpoints/<file name>``), so a
file LAVIS already fetched is found, and vice versa. Hub parts live in the Hugging Face cache.

Downloads go through well-kept libraries: ``torch.hub.download_url_to_file`` for URLs
(progress bar, temporary file renamed into place, no resume) and ``huggingface_hub`` for hub
ids (progress, atomic moves, resumed ``.incomplete`` files, ``HF_ENDPOINT`` for mirrors).
``LAVIS_EXT_WEIGHTS_BASE_URL`` replaces the folder part of every file URL, for mirrors and for
tests that serve files from a local server.

A cached file is checked before use: a file downloaded here carries a sidecar
(``<file>.lavis_ext.json``: URL, size, sha256 and the file's mtime). A file whose size or mtime
no longer matches is hashed again and refused (deleted, then downloaded again) if the hash
differs; a file without a sidecar must at least be a complete torch archive. A truncated
``eva_vit_g.pth`` (LAVIS issue #530) is therefore repaired instead of failing inside
``torch.load``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from lavis_ext.errors import UsageError
from lavis_ext.models.paths import MissingModelFileError

RANDOM = "random"
BASE_URL_ENV = "LAVIS_EXT_WEIGHTS_BASE_URL"
OFFLINE_ENVS = ("LAVIS_EXT_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
SIDECAR_SUFFIX = ".lavis_ext.json"
LAVIS_MODELS_URL = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models"


@dataclass(frozen=True)
class Part:
    """One pretrained artifact and every place it may come from."""

    name: str
    what: str
    key: str
    env: str
    url: str | None = None  # a single file (LAVIS's URLs)
    hub_id: str | None = None  # a Hugging Face repository
    hub_files: tuple[str, ...] = ()  # what a usable hub snapshot must hold
    approx_size: str = "unknown size"
    sha256: str | None = None
    size: int | None = None
    elsewhere: str = ""  # how to get it when it is not published

    @property
    def filename(self) -> str | None:
        return self.url.rsplit("/", 1)[-1] if self.url else None

    def source_url(self) -> str | None:
        """The URL to fetch, with ``$LAVIS_EXT_WEIGHTS_BASE_URL`` replacing its folder."""
        if self.url is None:
            return None
        base = os.environ.get(BASE_URL_ENV, "").strip()
        return f"{base.rstrip('/')}/{self.filename}" if base else self.url


PARTS: dict[str, Part] = {p.name: p for p in (
    Part("bert-base-uncased", "bert-base-uncased (Q-Former tokenizer and initial weights)",
         "model.bert_path", "LAVIS_EXT_BERT_PATH", hub_id="bert-base-uncased",
         hub_files=("config.json", "vocab.txt", "pytorch_model.bin"),
         approx_size="about 440 MB"),
    Part("blip2_pretrained", "BLIP-2's pre-trained Q-Former (blip2_pretrained.pth)",
         "model.pretrained", "LAVIS_EXT_BLIP2_PRETRAINED",
         url=f"{LAVIS_MODELS_URL}/BLIP2/blip2_pretrained.pth",
         approx_size="about 0.8 GB (estimate: Q-Former, projections and queries in fp32)"),
    Part("eva_vit_g", "EVA-CLIP ViT-G/14 weights (eva_vit_g.pth)", "model.vit_weights",
         "LAVIS_EXT_EVA_VIT_G", url=f"{LAVIS_MODELS_URL}/BLIP2/eva_vit_g.pth",
         approx_size="about 2 GB (estimate: 1.0B parameters in fp16)"),
    Part("opt-2.7b", "OPT-2.7B (frozen LLM)", "model.opt_model", "LAVIS_EXT_OPT_2_7B",
         hub_id="facebook/opt-2.7b", hub_files=("config.json", "pytorch_model.bin"),
         approx_size="about 5.3 GB"),
    Part("opt-6.7b", "OPT-6.7B (frozen LLM)", "model.opt_model", "LAVIS_EXT_OPT_6_7B",
         hub_id="facebook/opt-6.7b",
         hub_files=("config.json", "pytorch_model.bin.index.json"),
         approx_size="about 13.4 GB"),
    Part("vit_b_mae", "ViT-B/16 pre-trained with MAE on AffectNet", "model.vit_weights",
         "LAVIS_EXT_VIT_B_MAE", approx_size="about 0.3-1.3 GB",
         elsewhere="it was never released: pre-train one with MAE (200 epochs on AffectNet)"),
    Part("exp_blip", "the released Exp-BLIP captioner checkpoint", "model.finetuned",
         "LAVIS_EXT_EXP_BLIP_CKPT", approx_size="several GB",
         elsewhere="the authors share it by link (exp_blip_*_trimmed.pth)"),
    Part("au_blip", "the released AU-BLIP captioner checkpoint", "model.finetuned",
         "LAVIS_EXT_AU_BLIP_CKPT", approx_size="several GB",
         elsewhere="the authors share it by link (au_blip_*_trimmed.pth)"),
    Part("emot_blip", "an Emot-BLIP captioner checkpoint", "model.finetuned",
         "LAVIS_EXT_EMOT_BLIP_CKPT", approx_size="several GB",
         elsewhere="train one (projects/emot_blip)"),
)}
HUB_PARTS = {p.hub_id: p for p in PARTS.values() if p.hub_id}


class WeightsUnavailableError(MissingModelFileError):
    """A pretrained part is neither configured, cached, nor downloadable now."""


def offline() -> bool:
    """True when any of ``LAVIS_EXT_OFFLINE``, ``HF_HUB_OFFLINE``, ``TRANSFORMERS_OFFLINE`` is
    set to a true value (read at call time, unlike huggingface_hub's import-time constant)."""
    return any(os.environ.get(v, "").strip().lower() not in ("", "0", "false", "no")
               for v in OFFLINE_ENVS)


def is_url(value: str) -> bool:
    return str(value).startswith(("http://", "https://"))


def _unavailable(part: Part, reason: str, url: str | None = None) -> WeightsUnavailableError:
    where = url or part.source_url() or (f"the hub repository {part.hub_id}" if part.hub_id
                                         else None)
    env = f" or the environment variable {part.env}" if part.env else ""
    if where:
        return WeightsUnavailableError(
            f"{part.what} [{part.name}] is not available: {reason}. Set `{part.key}` in the "
            f"model config{env} to a local copy, or download {where} ({part.approx_size}) "
            f"with downloads allowed (`expblip weights --fetch {part.name}`, with "
            f"LAVIS_EXT_OFFLINE / HF_HUB_OFFLINE unset; mirrors: {BASE_URL_ENV} or "
            "HF_ENDPOINT).")
    return WeightsUnavailableError(
        f"{part.what} [{part.name}] is not available: {reason}, and {part.elsewhere} "
        f"({part.approx_size}). Set `{part.key}` in the model config{env} to a local copy.")


# --- file parts (URLs) --------------------------------------------------------------------

def file_cache_dir() -> Path:
    """LAVIS's download cache: ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME`` moves it)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _write_sidecar(path: Path, url: str | None, sha256: str) -> None:
    from lavis_ext.io import atomic_write_text

    stat = path.stat()
    atomic_write_text(_sidecar(path), json.dumps(
        {"url": url, "size": stat.st_size, "sha256": sha256, "mtime_ns": stat.st_mtime_ns}))


def _complete_archive(path: Path) -> bool:
    """A torch zip archive with an intact central directory, or a legacy pickle file."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                return bool(archive.namelist())
        except zipfile.BadZipFile:
            return False
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x80\x02"  # torch's legacy (pre-1.6) pickle format


def check_cached_file(path: Path, part: Part | None = None) -> str | None:
    """Why a cached file cannot be used (``None`` when it can); records a verified sidecar."""
    stat = path.stat()
    record = None
    if _sidecar(path).is_file():
        try:
            record = json.loads(_sidecar(path).read_text())
        except (OSError, ValueError):
            record = None
    expected_size = part.size if part and part.size else (record or {}).get("size")
    if expected_size is not None and stat.st_size != expected_size:
        return f"size {stat.st_size} bytes, expected {expected_size}"
    if record and record.get("mtime_ns") == stat.st_mtime_ns and (
            not part or not part.sha256 or record.get("sha256") == part.sha256):
        return None  # verified when it was written, untouched since
    if not _complete_archive(path):
        return "not a complete torch checkpoint archive (truncated or corrupt)"
    expected_sha = (part.sha256 if part and part.sha256 else None) or (record or {}).get("sha256")
    actual = _sha256(path)
    if expected_sha and actual != expected_sha:
        return f"sha256 {actual[:12]}... differs from the recorded {expected_sha[:12]}..."
    _write_sidecar(path, (record or {}).get("url") or (part.url if part else None), actual)
    return None


def _cached_file(path: Path, part: Part | None) -> Path | None:
    if not path.is_file():
        return None
    problem = check_cached_file(path, part)
    if problem is None:
        return path
    logging.warning("Refusing the cached file %s (%s); deleting it so that it is fetched "
                    "again.", path, problem)
    path.unlink(missing_ok=True)  # several ranks may refuse the same file
    _sidecar(path).unlink(missing_ok=True)
    return None


def _remote_size(url: str) -> int | None:
    request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "lavis_ext"})
    with urllib.request.urlopen(request, timeout=30) as response:
        length = response.headers.get("Content-Length")
    return int(length) if length else None


def download_file(url: str, dest: Path, part: Part | None = None, progress: bool = True
                  ) -> Path:
    """Fetch ``url`` to ``dest`` through ``torch.hub.download_url_to_file``, then verify the
    size against the server's and the manifest's, and the sha256 where the manifest has one."""
    from torch.hub import download_url_to_file

    dest.parent.mkdir(parents=True, exist_ok=True)
    size = _remote_size(url)
    download_url_to_file(url, str(dest), hash_prefix=part.sha256 if part else None,
                         progress=progress)
    actual = dest.stat().st_size
    expected = part.size if part and part.size else size
    if expected is not None and actual != expected:
        dest.unlink()
        raise OSError(f"downloaded {actual} bytes from {url}, expected {expected}")
    _write_sidecar(dest, url, _sha256(dest))
    return dest


def _file_part(part: Part, url: str | None, download: bool = True) -> str:
    """Cache, then download (rank 0 only when a process group is running)."""
    url = url or part.source_url()
    name = url.rsplit("/", 1)[-1] if url else part.filename
    dest = file_cache_dir() / name
    found = _cached_file(dest, part)
    if found is not None:
        return str(found)
    if url is None:
        raise _unavailable(part, "no local copy is configured and it is not published")
    if offline() or not download:
        why = "offline mode is on" if download else "downloads were not asked for"
        raise _unavailable(part, f"{why} and {dest} is not cached", url)
    try:
        return str(_on_rank_zero_first(lambda: download_file(url, dest, part), dest, part))
    except (OSError, urllib.error.URLError, RuntimeError) as err:
        raise _unavailable(part, f"downloading failed ({err})", url) from err


def _on_rank_zero_first(fetch, dest: Path, part: Part) -> Path:
    """Rank 0 downloads while the other ranks wait, then read the cache (as LAVIS does)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return fetch()
    result = fetch() if dist.get_rank() == 0 else None
    dist.barrier()
    if result is None:
        result = _cached_file(dest, part)
        if result is None:
            raise OSError(f"rank 0 did not leave a usable {dest}")
    return result


# --- hub parts ----------------------------------------------------------------------------

def _hub_snapshot(part: Part, local_only: bool) -> str:
    from huggingface_hub import snapshot_download

    folder = snapshot_download(part.hub_id, local_files_only=local_only,
                               allow_patterns=[*part.hub_files, "*.json", "*.txt", "*.bin"])
    missing = [f for f in part.hub_files if not (Path(folder) / f).exists()]
    if missing:
        raise FileNotFoundError(f"the snapshot {folder} lacks {missing}")
    return folder


def cached_hub_snapshot(hub_id: str) -> str | None:
    """The cached snapshot folder of a manifest hub part, without any network access."""
    part = HUB_PARTS.get(hub_id)
    if part is None:
        return None
    try:
        return _hub_snapshot(part, local_only=True)
    except Exception:  # noqa: BLE001 - any failure here means "not cached"
        return None


def _hub_part(part: Part, download: bool = True) -> str:
    cached = cached_hub_snapshot(part.hub_id)
    if cached:
        return cached
    url = f"{os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}/{part.hub_id}"
    if offline() or not download:
        why = "offline mode is on" if download else "downloads were not asked for"
        raise _unavailable(part, f"{why} and the Hugging Face cache has no complete "
                                 "snapshot", url)
    try:
        return _hub_snapshot(part, local_only=False)
    except Exception as err:  # noqa: BLE001 - hub errors are many; all mean "not available"
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _unavailable(part, f"downloading failed ({first})", url) from err


# --- the resolver -------------------------------------------------------------------------

def _is_default(part: Part, value: str | None) -> bool:
    """Values that mean "this part from its usual places": unset, its name, URL or hub id."""
    return value in (None, "", part.name, part.url, part.hub_id)


def resolve(part_name: str, value: str | os.PathLike | None = None, download: bool = True
            ) -> str:
    """A local path (file or folder) for a part, or ``"random"`` when the config says so.

    ``value`` is the config key's value: ``random``, a path (must exist), a URL (fetched into
    the cache), or unset / the part's name, URL or hub id (then the environment variable, the
    cache and a download, in that order).
    """
    part = PARTS[part_name]
    value = None if value is None else str(value)
    if value == RANDOM:
        return RANDOM
    if not _is_default(part, value):
        if is_url(value):
            return _file_part(part, value, download)
        return str(_existing(value, part, part.key))
    from_env = os.environ.get(part.env, "").strip()
    if from_env:
        return str(_existing(from_env, part, f"${part.env}"))
    if part.hub_id:
        return _hub_part(part, download)
    if part.url:
        return _file_part(part, None, download)
    raise _unavailable(part, "no local copy is configured")


# --- `expblip weights` --------------------------------------------------------------------

def add_arguments(parser: Any) -> None:
    parser.add_argument("parts", nargs="*", metavar="PART",
                        help=f"parts to look up (default: all): {', '.join(PARTS)}")
    parser.add_argument("--fetch", action="store_true",
                        help="download the parts that are not found (unless offline), e.g. "
                             "before going offline or onto a cluster node without network")


def run(args: Any) -> int:
    """Where each part resolves (variable, then cache); with --fetch, download what is missing.
    Exit 0 when every part was found, 1 otherwise."""
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        raise UsageError(f"unknown part(s) {unknown}; known: {', '.join(PARTS)}")
    found = 0
    names = args.parts or list(PARTS)
    for name in names:
        try:
            print(f"{name}: {resolve(name, download=args.fetch)}", flush=True)
            found += 1
        except WeightsUnavailableError as err:
            print(f"{name}: missing. {err}", flush=True)
    return 0 if found == len(names) else 1


def fetch_url(url: str, what: str = "checkpoint", key: str = "model.finetuned") -> str:
    """A URL that is no manifest part (e.g. a checkpoint named in a config), via the cache."""
    known = [p for p in PARTS.values() if p.url == url]
    part = known[0] if known else Part(url.rsplit("/", 1)[-1], what, key, "", url=url)
    return _file_part(part, None if known else url)


def _existing(value: str, part: Part, origin: str) -> Path:
    path = Path(os.path.expanduser(value))
    if not path.exists():
        raise WeightsUnavailableError(
            f"{part.what} [{part.name}]: {origin} names '{path}', which does not exist. Set "
            f"`{part.key}` in the model config or {part.env} to a local copy"
            + (f" (or leave both unset to use the cache or download {part.source_url()})"
               if part.url else "") + ".")
    return path


def resolve_all(requests: Iterable[tuple[str, str | None]]) -> list[str]:
    """Resolve several parts, raising ONE error that lists every part that is missing."""
    results, problems = [], []
    for part_name, value in requests:
        try:
            results.append(resolve(part_name, value))
        except WeightsUnavailableError as err:
            problems.append(str(err))
            results.append("")
    if problems:
        raise WeightsUnavailableError(
            problems[0] if len(problems) == 1 else
            f"{len(problems)} pretrained parts are missing:\n- " + "\n- ".join(problems))
    return results
