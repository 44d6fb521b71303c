"""Saved models: a folder with the probe (skops, never pickle) and a JSON model card.

::

    models/sst2/
      card.json     encoder name + fingerprint (+ a hub encoder's commit), features, labels,
                    C, metrics, data hashes, library versions, date, the SHA-256 of every
                    other file, and a seal (SHA-256s of the fields that decide predictions)
      probe.skops   the fitted LinearProbe

Loading checks the card's format, its seal (a card edited in a field that decides predictions is
refused), the files' hashes (an altered file is refused), the probe's types against an explicit
trusted list, and the encoder's fingerprint (a model trained on other weights is refused). A
hub encoder's commit (``encoder.revision``) is recorded beside its fingerprint, and loading
fetches that commit, not whatever the hub's ``main`` holds by then. A
fine-tuned encoder will ship inside the folder (``encoder/``), named in the card's
``encoder.folder``; the rest of the format stays as it is.

Example:
    >>> from bertprobe import Classifier
    >>> model = Classifier.load("models/sst2")  # doctest: +SKIP
    >>> model.predict(["a gorgeous, witty film"])  # doctest: +SKIP
    array([1])
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import zipfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bertprobe.core.errors import BertprobeError, ModelFolderError
from bertprobe.data.files import LabelledTexts, check_output_path, staged_folder
from bertprobe.encoders.hub import EncoderRef, folder_fingerprint, resolve_encoder
from bertprobe.encoders.options import FeatureSpec
from bertprobe.heads.base import is_head, trusted_types
from bertprobe.heads.decision import Decision

# A fitted head (see bertprobe.heads.base.Head), whatever its type.
Probe = Any

MODEL_FORMAT = "bertprobe-model"
# 2: the card carries a seal over the fields that decide predictions; 1 (no seal) still loads.
FORMAT_VERSION = 2
# Cards of models that chunk long texts: a bertprobe that predates windows would read such a
# card as truncating and answer from other vectors, so it must refuse it as newer.
LONG_TEXT_FORMAT_VERSION = 3
SEALED_SINCE = 2
CARD_FILE = "card.json"
PROBE_FILE = "probe.skops"
# A fine-tuned encoder ships inside the model folder, as a plain Hugging Face folder.
ENCODER_FOLDER = "encoder"
# With train --auto, when CV prefers it: a TF-IDF + LR pipeline that votes with the probe.
TEXT_MODEL_FILE = "tfidf.skops"
# Model folders saved before the package was laid out in layers (December 2026) name the
# probes by their old modules; skops imports a type by its recorded module, so those names
# resolve to the modules the classes live in now (see _legacy_module_names).
LEGACY_MODULES = {
    "bertprobe.probe": "bertprobe.heads.probe",
    "bertprobe.multilabel": "bertprobe.heads.multilabel",
}
# Their types by those names: each registered head of the renamed modules, as it was called.
LEGACY_PREFIXES = {f"{new}.": f"{old}." for old, new in LEGACY_MODULES.items()}
# Every type a probe file may hold beyond what skops trusts by default (numpy, sklearn
# estimators) is a registered head's (bertprobe.heads.base.register_head) or what one holds,
# or an old name of one; anything else in the file is refused before it is loaded.
# skops writes each entry of a TF-IDF vocabulary as a JSON node: 55 MB stored for SST-2's 81,047
# terms, 4.3 MB deflated at level 1, for 0.2 s more (any zip reader, older skops too, reads it).
_COMPRESSED = {"compression": zipfile.ZIP_DEFLATED, "compresslevel": 1}
# decision_threshold: the labels `--threshold auto` gives.
_DECISIVE_IF_PRESENT = ("decision_threshold",)
_VERSIONED = ("bertprobe", "torch", "transformers", "tokenizers", "scikit-learn", "skops", "numpy")


@dataclass
class SavedModel:
    """The parts of a model folder, checked: what :class:`bertprobe.Classifier` is made of."""

    card: dict[str, Any]
    probe: Probe
    encoder: EncoderRef
    spec: FeatureSpec
    folder: Path
    backend: str = "torch"
    text_model: Any = None  # sklearn Pipeline over raw texts that votes with the probe


def check_model_destination(folder: str | Path) -> Path:
    """Refuse a place a model folder cannot go: call before training, so no work is lost.

    A missing path or an empty folder is fine, and so is an earlier model (it is replaced).
    """
    folder = check_output_path(folder, what="--out", folder=True)
    if folder.is_dir() and any(folder.iterdir()) and not _is_model_folder(folder):
        raise ModelFolderError(
            f"{folder} exists and is not a bertprobe model folder; choose another --out or empty it"
        )
    return folder


def save_model(
    folder: str | Path,
    probe: Probe,
    encoder: EncoderRef,
    spec: FeatureSpec,
    *,
    max_length: int,
    backend: str = "torch",
    metrics: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    text_model: Any = None,
    encoder_folder: str | Path | None = None,
    base_encoder: EncoderRef | None = None,
) -> Path:
    """Write a model folder atomically; an existing folder is replaced only if it is ours.

    ``text_model``, a fitted scikit-learn pipeline over raw texts with the probe's classes,
    votes with the probe (probabilities averaged); ``train --auto`` adds one when CV says so.
    ``encoder_folder``, a fine-tuned encoder (``base_encoder`` the one it was tuned from), is
    copied into the folder as ``encoder/``; its files are hashed like the probe's.
    """
    import skops.io as sio

    folder = check_model_destination(folder)
    decision = Decision.for_head(probe)
    with staged_folder(folder) as staging:
        sio.dump(probe, staging / PROBE_FILE, **_COMPRESSED)
        files = {PROBE_FILE: _sha256(staging / PROBE_FILE)}
        encoder_record: dict[str, Any] = {
            "name": encoder.name,
            "fingerprint": encoder.fingerprint,
            **_revision_record(encoder),
            "resolved_path": str(encoder.path),
        }
        if encoder_folder is not None:
            shutil.copytree(encoder_folder, staging / ENCODER_FOLDER)
            for path in sorted((staging / ENCODER_FOLDER).rglob("*")):
                if path.is_file():
                    files[path.relative_to(staging).as_posix()] = _sha256(path)
            encoder_record = {
                "name": encoder.name,
                "fingerprint": folder_fingerprint(staging / ENCODER_FOLDER),
                "folder": ENCODER_FOLDER,
                **(
                    {
                        "base": {
                            "name": base_encoder.name,
                            "fingerprint": base_encoder.fingerprint,
                            **_revision_record(base_encoder),
                        }
                    }
                    if base_encoder is not None
                    else {}
                ),
            }
        vote = None
        if text_model is not None:
            if list(text_model.classes_) != list(probe.classes_):
                raise ValueError("the text model's classes differ from the probe's")
            sio.dump(text_model, staging / TEXT_MODEL_FILE, **_COMPRESSED)
            files[TEXT_MODEL_FILE] = _sha256(staging / TEXT_MODEL_FILE)
            vote = {
                "with": TEXT_MODEL_FILE,
                "rule": "mean of probabilities",
                "tfidf_C": float(text_model[-1].C_),
            }
        card = {
            "format": MODEL_FORMAT,
            "format_version": LONG_TEXT_FORMAT_VERSION
            if spec.long != "truncate"
            else FORMAT_VERSION,
            "id": f"{folder.name}-{files[PROBE_FILE][:12]}",
            "kind": _kind(decision),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "encoder": encoder_record,
            "features": {
                "pooling": spec.pooling,
                "layers": list(spec.layers),
                "max_length": max_length,
                "backend": backend,
                **spec.long_record(max_length),
            },
            "labels": probe.classes_.tolist(),
            # How probabilities become labels, for whoever reads the card; not sealed, since
            # loading checks it against the head's own (whose file is hashed) instead.
            "decision": decision.record(),
            "probe": probe_record(probe),
            **({"vote": vote} if vote else {}),
            "metrics": metrics or {},
            "data": data or {},
            "versions": _versions(),
            "files": files,
            **(extra or {}),
        }
        card["seal"] = _seal(card)
        (staging / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return folder


def _revision_record(encoder: EncoderRef) -> dict[str, Any]:
    # Only hub encoders have one. The key is absent otherwise, not null, so a card is the same
    # as before for a local folder or minilm; older bertprobe versions ignore the key (and the
    # seal covers it like every field of the encoder section).
    return {"revision": encoder.revision} if encoder.revision else {}


def read_card(folder: str | Path) -> dict[str, Any]:
    """The model card of a folder, after checking the folder is a bertprobe model."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(
            f"{folder}: no such model folder; train one with 'bertprobe train DATA --out {folder}'"
        )
    try:
        card = json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFolderError(
            f"{folder} is not a bertprobe model folder (no {CARD_FILE}); give "
            "the --out folder of 'bertprobe train'"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFolderError(
            f"{folder / CARD_FILE} is not readable JSON ({exc}); retrain or restore the folder"
        ) from None
    if not isinstance(card, dict) or card.get("format") != MODEL_FORMAT:
        raise ModelFolderError(
            f"{folder} is not a bertprobe model folder ({CARD_FILE} is not a "
            "bertprobe model card); give the --out folder of 'bertprobe train'"
        )
    if type(card.get("format_version")) is not int:
        raise ModelFolderError(
            f"{folder / CARD_FILE} has no valid format_version; restore the card or retrain"
        )
    if card["format_version"] > LONG_TEXT_FORMAT_VERSION:
        raise ModelFolderError(
            f"{folder} was saved by a newer bertprobe (format "
            f"{card['format_version']}); upgrade bertprobe to load it"
        )
    return card


def read_model(folder: str | Path, *, check_encoder: bool = True) -> SavedModel:
    """Read a model folder, refusing one that was altered or whose encoder changed.

    :meth:`bertprobe.Classifier.load` makes the model of it.
    """

    folder = Path(folder)
    card = read_card(folder)
    _check_seal(folder, card)
    for name, expected in card.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise ModelFolderError(
                f"{path} is missing; the model folder is incomplete, retrain or restore it"
            )
        if _sha256(path) != expected:
            raise ModelFolderError(
                f"{path} was altered after saving (its SHA-256 differs from "
                f"{CARD_FILE}); retrain or restore the file"
            )
    if PROBE_FILE not in card.get("files", {}):
        raise ModelFolderError(f"{folder / CARD_FILE} lists no {PROBE_FILE}; retrain the model")

    probe_path = folder / PROBE_FILE
    probe = _load_skops(probe_path)
    if not is_head(probe):
        raise ModelFolderError(f"{probe_path} does not hold a bertprobe head; retrain the model")
    decision = Decision.for_head(probe)
    try:
        stated = _card_decision(card)
    except (BertprobeError, KeyError, TypeError, AttributeError):
        stated = None  # an unreadable decision section: it does not describe the head
    shown = card.get("probe", {}).get("thresholds")
    if (
        card.get("kind") != _kind(decision)
        or stated != decision
        or (shown is not None and shown != probe.card_record().get("thresholds"))
    ):
        # The decision (a label-set model's thresholds) decides predictions; the card shows it,
        # so it must show the real one.
        raise ModelFolderError(
            f"{folder / CARD_FILE} does not describe the head in {PROBE_FILE} (its kind or "
            "thresholds differ); restore the card or retrain"
        )
    text_model = None
    if card.get("vote"):
        text_path = folder / card["vote"]["with"]
        if text_path.name not in card.get("files", {}):
            raise ModelFolderError(
                f"{folder / CARD_FILE} names a voter it does not list; retrain the model"
            )
        text_model = _load_skops(text_path)
        if list(getattr(text_model, "classes_", [])) != probe.classes_.tolist():
            raise ModelFolderError(
                f"{text_path} does not predict the probe's labels; retrain the model"
            )

    features = card["features"]
    # Cards from before long-text windows have no "long": they truncated.
    spec = FeatureSpec(
        features["pooling"],
        tuple(features["layers"]),
        features["max_length"],
        features.get("long", "truncate"),
        features.get("stride"),
        features.get("window_pool", "mean"),
    )
    encoder = card_encoder(folder, card, check_encoder)
    return SavedModel(
        card=card,
        probe=probe,
        encoder=encoder,
        spec=spec,
        folder=folder,
        backend=features.get("backend", "torch"),
        text_model=text_model,
    )


def _kind(decision: Decision) -> str:
    """The card's ``kind``: what a text gets, a label set or one label."""
    return "multi-label-probe" if decision.label_sets else "linear-probe"


def _card_decision(card: dict[str, Any]) -> Decision:
    """The decision a card states: its ``decision``, or for a card written before it, what its
    ``kind`` and the probe's thresholds said."""
    labels = card.get("labels") or []
    if "decision" in card:
        return Decision.from_record(card["decision"], labels)
    sets = card.get("kind") == "multi-label-probe"
    thresholds = card.get("probe", {}).get("thresholds") or {}
    return Decision.from_legacy(labels, sets, [thresholds.get(str(c), 0.5) for c in labels])


def _decisive(card: dict[str, Any]) -> dict[str, Any]:
    """The card's fields that decide predictions, by dotted name: the one list to extend.

    Sections are taken whole, one entry per key, so a key added later under ``features`` (a
    long-text mode, say) is sealed without touching this function; a new top-level field goes
    in the tuple. An absent section counts too (as null), so adding one is an edit.
    """
    fields: dict[str, Any] = {}
    for key in ("format_version", "kind", "encoder", "features", "labels", "vote", "files"):
        value = card.get(key)
        if isinstance(value, dict):
            fields.update({f"{key}.{name}": item for name, item in value.items()})
        else:
            fields[key] = value
    # Sections added later are sealed when present only, so the cards written before them
    # still load; once sealed, removing one is an edit like any other.
    for key in _DECISIVE_IF_PRESENT:
        if key in card:
            fields[key] = card[key]
    return fields


def _seal(card: dict[str, Any]) -> dict[str, str]:
    # One SHA-256 per decisive field, over its canonical JSON, rather than one over them all: a
    # refusal can then name the field, with no second copy of the values in the card for a user
    # to edit instead. A checksum against edits, not a signature: whoever recomputes it forges it.
    return {
        name: hashlib.sha256(
            json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
        for name, value in _decisive(card).items()
    }


def _check_seal(folder: Path, card: dict[str, Any]) -> None:
    """Refuse a card edited in a field that decides predictions; cards before seals pass."""
    seal = card.get("seal")
    if seal is None and card["format_version"] < SEALED_SINCE:
        return
    path = folder / CARD_FILE
    if not isinstance(seal, dict):
        raise ModelFolderError(
            f"{path} has no valid seal (format {SEALED_SINCE} and later keep one to check the "
            "fields that decide predictions); restore the card or retrain"
        )
    current = _seal(card)
    changed = sorted(
        name for name in seal.keys() | current.keys() if seal.get(name) != current.get(name)
    )
    if changed:
        raise ModelFolderError(
            f"{path} was edited in a field that decides predictions ({', '.join(changed)}); "
            "restore it or retrain"
        )


def _load_skops(path: Path) -> Any:
    """Load a skops file only if every type in it is trusted, by skops or by our list."""
    import skops.io as sio

    try:
        untrusted = set(sio.get_untrusted_types(file=path))
    except Exception as exc:  # skops raises assorted errors on a damaged archive
        raise ModelFolderError(
            f"{path} is not a readable skops file ({exc}); retrain or restore it"
        ) from None
    trusted = trusted_types()
    trusted |= {
        old + name[len(new) :]
        for name in trusted
        for new, old in LEGACY_PREFIXES.items()
        if name.startswith(new)
    }
    if untrusted - trusted:
        raise ModelFolderError(
            f"{path} holds types bertprobe does not trust "
            f"({', '.join(sorted(untrusted - trusted))}); refusing to "
            "load it (a head of your own: register it with bertprobe.heads.base.register_head)"
        )
    _legacy_module_names()
    return sio.load(path, trusted=sorted(untrusted))


def _legacy_module_names() -> None:
    """Let skops find a probe saved under its old module name (see LEGACY_MODULES): the old
    name is an alias of the new module in ``sys.modules``, not a module of its own."""
    import importlib
    import sys

    for old, new in LEGACY_MODULES.items():
        sys.modules.setdefault(old, importlib.import_module(new))


def card_encoder(folder: Path, card: dict, check: bool = True) -> EncoderRef:
    """The encoder a card names, resolved and checked against its fingerprint (a fine-tuned
    one from inside the folder), or taken on trust with ``check=False``. A hub encoder is
    resolved at the commit the card records (``encoder.revision``); cards without one (older,
    or a local encoder) resolve the name as before."""
    info = card["encoder"]
    saved = info["fingerprint"]
    # A fine-tuned model carries its encoder inside the folder; a probe names a shared one.
    inside = bool(info.get("folder"))
    name = str(folder / info["folder"]) if inside else info["name"]
    revision = None if inside else info.get("revision")
    if not check:
        return EncoderRef(
            name=info["name"],
            path=Path(info.get("resolved_path", "")),
            fingerprint=saved,
            revision=revision,
        )
    try:
        ref = replace(resolve_encoder(name, revision), name=info["name"])
    except BertprobeError as exc:
        raise ModelFolderError(
            f"{folder}: its encoder cannot be loaded: {exc}", param=exc.params
        ) from None
    if ref.fingerprint != saved:
        raise ModelFolderError(
            f"{folder}: encoder {info['name']!r} at {ref.path} no longer matches the one the "
            f"model was trained with (fingerprint {ref.fingerprint[:19]} != {saved[:19]}); use "
            "the same encoder weights or retrain"
        )
    return ref


def probe_record(probe: Probe) -> dict[str, Any]:
    """What the card says of the probe: its own record (every head has ``card_record``)."""
    return probe.card_record()


def file_record(path: str | Path, n: int, sha256: str) -> dict[str, Any]:
    """What the card records of a data file: where it was, its hash and row count."""
    return {"path": str(path), "sha256": sha256, "n": n}


def data_records(train: LabelledTexts | None, test: LabelledTexts | None = None) -> dict[str, Any]:
    """The card's ``data`` section for a training set (None: a model made without labels) and
    an optional test set."""
    records = {"train": file_record(train.source, len(train), train.sha256)} if train else {}
    if test is not None:
        records["test"] = file_record(test.source, len(test), test.sha256)
    return records


def _is_model_folder(folder: Path) -> bool:
    try:
        read_card(folder)
    except ModelFolderError:
        return False
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in _VERSIONED:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found
