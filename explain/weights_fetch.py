"""Fetching a built-in model's pretrained weights from where its library publishes them.

On an explicit request only (``manage.py fetch_weights NAME``, or an operator's button on the
Models page); loading a model never downloads anything (see :mod:`explain.core.zoo`).

Where the file comes from:

- torchvision models: the ``url`` of the weights enum (``ResNet18_Weights.IMAGENET1K_V1.url``).
  Its file name carries the first hex digits of the file's sha256 (``resnet18-f37072fd.pth``),
  which is checked as ``torch.hub`` checks it (``torch.hub.HASH_REGEX``);
- timm models: the pretrained config (``timm.models.get_pretrained_cfg``). Where it names a
  Hugging Face hub repository (``hf_hub_id``) that is used, as timm itself prefers it:
  ``https://huggingface.co/<hf_hub_id>/resolve/main/model.safetensors`` (then
  ``pytorch_model.bin``). Those configs publish no checksum: the record says so, and keeps the
  sha256 of what arrived. A config with only a ``url`` is fetched and checked like torchvision's.

A mirror (``SALIENCY_WEIGHTS_MIRROR``, a base URL) replaces the origin and keeps the file name:
``<mirror>/<file name>`` for a URL (``<mirror>/resnet18-f37072fd.pth``) and
``<mirror>/<hf_hub_id>/<file name>`` for a hub file
(``<mirror>/timm/vit_base_patch16_224.augreg2_in21k_ft_in1k/model.safetensors``).

The download goes to a hidden temporary folder inside the weights folder; only a complete file whose
checksum fits is handed to :func:`explain.core.zoo.import_weights`, which checks keys, shapes
and one forward pass before it atomically renames the ``.safetensors`` into place. Whatever
fails, no partial file is left. Without a network the first connection fails within
``CONNECT_TIMEOUT`` seconds with a message that names ``import_weights``.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from http.client import HTTPException
from pathlib import Path
from typing import Callable

from saliency_site.errors import InputError, NotAvailable

from .core import zoo

logger = logging.getLogger(__name__)

#: Seconds to wait for a connection (and for each read): short, so an offline server says so at once.
CONNECT_TIMEOUT = 10.0
CHUNK = 1 << 20

#: Where each built-in's published weights are: ("torchvision", weights enum member) or
#: ("timm", pretrained config name). The zoo loads the same files from the libraries' caches.
LIBRARY_WEIGHTS: dict[str, tuple[str, str]] = {
    "vgg16": ("torchvision", "VGG16_Weights.IMAGENET1K_V1"),
    "vgg19": ("torchvision", "VGG19_Weights.IMAGENET1K_V1"),
    "resnet18": ("torchvision", "ResNet18_Weights.IMAGENET1K_V1"),
    "vit_b_16": ("timm", "vit_base_patch16_224.augreg2_in21k_ft_in1k"),
    "efficientnet_lite0": ("timm", "efficientnet_lite0.ra_in1k"),
}

HF_ENDPOINT = "https://huggingface.co"
HF_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class Candidate:
    """One file that holds the weights: at the origin (``url``) and under a mirror (``mirror_path``)."""

    url: str
    mirror_path: str
    sha256_prefix: str = ""      # "" where the library publishes no checksum

    def location(self, mirror: str = "") -> str:
        return f"{mirror.rstrip('/')}/{self.mirror_path}" if mirror else self.url


@dataclass(frozen=True)
class WeightsSource:
    """The published weights of a built-in: the library's name for them and the files to try, in order."""

    name: str
    origin: str                  # e.g. "torchvision ResNet18_Weights.IMAGENET1K_V1"
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True)
class FetchResult:
    name: str
    url: str
    path: Path
    sha256: str
    bytes: int
    checksum_note: str           # how the file was checked, in words (kept in the model's record)


def _hash_prefix(file_name: str) -> str:
    import torch.hub

    found = torch.hub.HASH_REGEX.search(file_name)
    return found.group(1) if found else ""


def _url_candidate(url: str) -> Candidate:
    name = os.path.basename(url.split("?", 1)[0])
    return Candidate(url=url, mirror_path=name, sha256_prefix=_hash_prefix(name))


def source_for(name: str) -> WeightsSource:
    """Where the library publishes the weights of built-in ``name`` (no network used)."""
    zoo.get_spec(name)
    try:
        library, weights = LIBRARY_WEIGHTS[name]
    except KeyError:
        raise InputError(f"{name} has no published weights to fetch; install a file with "
                         f"`manage.py import_weights {name} FILE`") from None
    if library == "torchvision":
        import torchvision.models as tvm

        return WeightsSource(name, f"torchvision {weights}", (_url_candidate(tvm.get_weight(weights).url),))
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(weights)
    if cfg is None:
        raise InputError(f"timm has no pretrained config {weights!r} for {name}")
    if cfg.hf_hub_id:
        repo = cfg.hf_hub_id.split("@", 1)[0]
        files = (cfg.hf_hub_filename,) if getattr(cfg, "hf_hub_filename", None) else HF_FILES
        return WeightsSource(name, f"timm {weights} (Hugging Face hub {repo})", tuple(
            Candidate(url=f"{HF_ENDPOINT}/{repo}/resolve/main/{f}", mirror_path=f"{repo}/{f}") for f in files))
    if cfg.url:
        return WeightsSource(name, f"timm {weights}", (_url_candidate(cfg.url),))
    raise InputError(f"timm's config {weights!r} names no file to fetch for {name}")


def _offline_message(name: str, where: str, why: str) -> str:
    return (f"could not download the weights of {name} from {where}: {why}. Without internet access, "
            f"copy the file onto this machine and install it with `manage.py import_weights {name} FILE` "
            "(or set SALIENCY_WEIGHTS_MIRROR to a mirror this machine can reach)")


class _NotThere(Exception):
    """HTTP 404: the next candidate file is tried."""


def _download(name: str, url: str, target: Path, prefix: str,
              progress: Callable[[int, int | None], None] | None) -> tuple[str, int]:
    """Stream ``url`` into ``target``; return (sha256, bytes). Raise ``NotAvailable`` on any failure."""
    request = urllib.request.Request(url, headers={"User-Agent": "saliency-workbench-fetch_weights"})
    try:
        response = urllib.request.urlopen(request, timeout=CONNECT_TIMEOUT)  # http(s) only: checked by the caller
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise _NotThere(url) from None
        raise NotAvailable(f"could not download the weights of {name}: {url} answered HTTP {error.code} "
                           f"{error.reason}") from None
    except (urllib.error.URLError, socket.timeout, OSError, HTTPException) as error:
        why = getattr(error, "reason", None) or error
        if isinstance(why, socket.gaierror):
            why = "the host name does not resolve (no DNS: offline?)"
        elif isinstance(why, ConnectionRefusedError):
            why = "the connection was refused"
        elif isinstance(why, (socket.timeout, TimeoutError)):
            why = f"no answer within {CONNECT_TIMEOUT:.0f} s"
        raise NotAvailable(_offline_message(name, url, str(why))) from None
    digest = hashlib.sha256()
    received = 0
    with response, open(target, "wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        if progress:
            progress(0, total)
        try:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                out.write(block)
                digest.update(block)
                received += len(block)
                if progress:
                    progress(received, total)
        except (OSError, HTTPException) as error:
            raise NotAvailable(f"the download of {name} from {url} broke off after {received} bytes "
                               f"({type(error).__name__}); nothing was installed, try again") from None
    if total is not None and received != total:
        raise NotAvailable(f"the download of {name} from {url} is incomplete: {received} of {total} bytes "
                           "arrived; nothing was installed, try again")
    if received == 0:
        raise NotAvailable(f"{url} sent an empty file for {name}; nothing was installed")
    sha256 = digest.hexdigest()
    if prefix and not sha256.startswith(prefix):
        raise NotAvailable(f"the file downloaded for {name} from {url} has sha256 {sha256[:16]}…, but its "
                           f"published checksum starts with {prefix}: refused, nothing was installed")
    return sha256, received


def fetch_weights(name: str, *, mirror: str = "", source: WeightsSource | None = None,
                  progress: Callable[[int, int | None], None] | None = None) -> FetchResult:
    """Download, verify and install the published weights of built-in ``name``.

    ``mirror`` (a base URL) replaces the origin, keeping the file name (module docstring).
    ``progress(bytes_done, total_or_None)`` is called as the file arrives. Returns where the
    weights now are (``zoo.weights_dir()/<name>.safetensors``) with the checksum of the download.
    Raises ``NotAvailable`` (no connection, HTTP error, incomplete file, wrong checksum) or
    ``WeightsInvalid`` (the file does not fit the architecture); in every case nothing is installed.
    """
    source = source or source_for(name)
    if mirror and not mirror.startswith(("http://", "https://")):
        raise InputError(f"SALIENCY_WEIGHTS_MIRROR must be an http(s) base URL, not {mirror!r}")
    folder = zoo.weights_dir()
    folder.mkdir(parents=True, exist_ok=True)
    tried = []
    for candidate in source.candidates:
        url = candidate.location(mirror)
        if not url.startswith(("http://", "https://")):
            raise InputError(f"{url!r} is not an http(s) URL")
        # A hidden folder of its own, so that the file keeps its name (errors name it) and a
        # failure at any point leaves nothing that looks like weights.
        part_dir = Path(tempfile.mkdtemp(prefix=f".{name}-fetch-", dir=folder))
        part = part_dir / Path(candidate.mirror_path).name
        try:
            try:
                sha256, size = _download(name, url, part, candidate.sha256_prefix, progress)
            except _NotThere:
                tried.append(url)
                continue
            target, _ = zoo.import_weights(name, part)
        finally:
            shutil.rmtree(part_dir, ignore_errors=True)
        note = (f"sha256 starts with {candidate.sha256_prefix}, as the file name published by the library says"
                if candidate.sha256_prefix else
                f"{source.origin} publishes no checksum; sha256 of the download recorded")
        logger.info("fetched %s weights from %s (%d bytes, sha256 %s; %s)", name, url, size, sha256[:12], note)
        return FetchResult(name=name, url=url, path=target, sha256=sha256, bytes=size, checksum_note=note)
    raise NotAvailable(f"no weights file for {name} at {', '.join(tried)} (HTTP 404)"
                       + (f"; is SALIENCY_WEIGHTS_MIRROR ({mirror}) laid out as README says?" if mirror else ""))
