"""A classifier that runs in the browser (``bertprobe export --web``).

:func:`export_web` writes a static folder that any static file server can publish and that
needs nothing else once loaded, not even the network: ``index.html`` (the service's try-it page:
a text box, examples, the label and a bar per class, and a box for many lines or a dropped
CSV/TSV file whose rows are labelled and offered as a CSV download), the classifier as
:func:`bertprobe.export.export_classifier` writes it (``model.onnx``, int8 unless asked for
fp32, ``tokenizer.json``, ``card.json`` and a voter's ``tfidf.json``), ``classifier.js`` (what
:class:`~bertprobe.export.ExportedClassifier` computes, in JavaScript) and, under ``vendor/``,
the browser libraries the page runs on: onnxruntime-web (its WASM build), tokenizers.js
(``@huggingface/tokenizers``) and Papa Parse (CSV), at the versions of :data:`ASSETS`.

Where the libraries come from: they are npm packages, 15 MB of WASM and JavaScript that a
Python wheel should not carry for one command, so bertprobe pins them here (version and each
file's SHA-256) and copies them from an npm install: ``web_assets`` (``--web-assets DIR``),
else ``$BERTPROBE_WEB_ASSETS``, else ``<sys.prefix>/share/bertprobe/web`` (where ``make``
installs ``web/package-lock.json`` with ``npm ci``), else the user cache
(``platformdirs.user_cache_dir("bertprobe")/web``). A file whose hash differs is refused: the page
runs exactly the code that was tested. The page loads them with their integrity (SRI, in an
import map and on the script tag), and ``card.json``'s ``"web"`` records both.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from bertprobe.core.errors import BadInputError
from bertprobe.data.files import LABEL_COLUMN_NAMES, TEXT_COLUMN_NAMES, staged_folder
from bertprobe.export import (
    EXPORT_FILES,
    VOTE_FILE,
    check_export_destination,
    export_classifier,
)

ENV_ASSETS = "BERTPROBE_WEB_ASSETS"
VENDOR = "vendor"
PAGE_FILES = ("index.html", "classifier.js")
DEFAULT_EXAMPLES = (
    "a gorgeous, witty, seductive movie",
    "the plot is a mess and the jokes fall flat",
    "not as bad as i expected, but not good either",
)


@dataclass(frozen=True)
class Asset:
    """One file of an npm package that the page needs, pinned by its SHA-256."""

    package: str
    version: str
    path: str  # in the package
    sha256: str
    license: str

    @property
    def target(self) -> str:
        """Where it goes in the folder."""
        return f"{VENDOR}/{Path(self.path).name}"


ORT, TOKENIZERS, PAPAPARSE = "onnxruntime-web", "@huggingface/tokenizers", "papaparse"
# Keep in step with web/package.json (tests/test_web.py checks it).
PACKAGES = {ORT: "1.31.1", TOKENIZERS: "0.2.0", PAPAPARSE: "5.7.1"}
ASSETS = (
    # The WASM-only build of onnxruntime-web, as an ES module; it imports the next file, which
    # loads the WASM (threads are used only where the page is cross-origin isolated).
    Asset(
        ORT,
        PACKAGES[ORT],
        "dist/ort.wasm.min.mjs",
        "c21d9c326d453a4a61398270c804d5979e118540597cb0c07f7b3d64e6098234",
        "MIT",
    ),
    Asset(
        ORT,
        PACKAGES[ORT],
        "dist/ort-wasm-simd-threaded.mjs",
        "30ed0b5cd1182ede931fea448afb567d4dc705ec957af09f108a2be5f770dac3",
        "MIT",
    ),
    Asset(
        ORT,
        PACKAGES[ORT],
        "dist/ort-wasm-simd-threaded.wasm",
        "4b884c203b0fa48d057be3332c65513ff85aa3c5bddd6946acc0fab7ecda001d",
        "MIT",
    ),
    Asset(
        TOKENIZERS,
        PACKAGES[TOKENIZERS],
        "dist/tokenizers.min.mjs",
        "258e46332101335ce8d95aed7745b19ac3b46d37f3e159a89cf894c2ea9b1d3a",
        "Apache-2.0",
    ),
    Asset(
        TOKENIZERS,
        PACKAGES[TOKENIZERS],
        "LICENSE",
        "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4",
        "Apache-2.0",
    ),
    Asset(
        PAPAPARSE,
        PACKAGES[PAPAPARSE],
        "papaparse.min.js",
        "e032656b2c709e9a756d5be817da9885d58b2313c43d432c414eb8534a752685",
        "MIT",
    ),
)

# What tokenizers.js 0.2.0 builds from a tokenizer.json (its create_* functions); a tokenizer
# with another part would fail in the page, so the export refuses it.
PAGE_TOKENIZER_PARTS = {
    "model": {"WordPiece", "BPE", "Unigram"},
    "normalizer": {
        "BertNormalizer", "Precompiled", "Sequence", "Replace", "NFC", "NFD", "NFKC", "NFKD",
        "Strip", "StripAccents", "Lowercase", "Prepend",
    },
    "pre_tokenizer": {
        "BertPreTokenizer", "Sequence", "Whitespace", "WhitespaceSplit", "Metaspace", "ByteLevel",
        "Split", "Punctuation", "Digits", "Replace", "FixedLength",
    },
    "post_processor": {
        "TemplateProcessing", "ByteLevel", "BertProcessing", "RobertaProcessing", "Sequence",
    },
}  # fmt: skip
# onnxruntime-web reads the graph as one ArrayBuffer into 32-bit WASM memory: a graph over
# protobuf's 2 GB (written with external data) cannot be loaded there.
MAX_GRAPH_BYTES = 2**31 - 1


@dataclass(frozen=True, kw_only=True)
class WebOptions:
    """How :func:`export_web` writes the page's folder.

    Parameters
    ----------
    fp32 : bool
        Keep the graph's weights in float32 (about 4x the download); by default they are
        quantized to int8, as ``export --int8`` does.
    web_assets : path, optional
        An npm install (a folder with ``node_modules/``, or ``node_modules`` itself) holding
        :data:`ASSETS`; by default the places the module docstring lists are searched.
    examples : tuple of str
        The texts the page offers as examples.
    check : bool
        As :func:`~bertprobe.export.export_classifier`'s.
    """

    fp32: bool = False
    web_assets: Path | None = None
    examples: tuple[str, ...] = DEFAULT_EXAMPLES
    check: bool = True


def asset_places(web_assets: str | Path | None = None) -> list[Path]:
    """Where the browser libraries are looked for, in order: the folder named (``web_assets``,
    else ``$BERTPROBE_WEB_ASSETS``) alone, or else the environment's and the user's."""
    named = web_assets if web_assets is not None else os.environ.get(ENV_ASSETS) or None
    if named is not None:
        return [Path(named)]
    from platformdirs import user_cache_dir

    return [
        Path(sys.prefix) / "share" / "bertprobe" / "web",
        Path(user_cache_dir("bertprobe")) / "web",
    ]


def _node_modules(place: Path) -> Path:
    return place if place.name == "node_modules" else place / "node_modules"


def find_web_assets(web_assets: str | Path | None = None) -> Path:
    """The ``node_modules`` folder that holds every file of :data:`ASSETS` with its pinned
    SHA-256; one line naming what is missing or altered, and how to install it, otherwise."""
    places = asset_places(web_assets)
    install = " ".join(f"{name}@{version}" for name, version in PACKAGES.items())
    for place in places:
        modules = _node_modules(place)
        if not (modules / ORT).is_dir() and len(places) > 1:
            continue  # not installed here: the next place
        for asset in ASSETS:
            path = modules / asset.package / asset.path
            if not path.is_file():
                raise BadInputError(
                    f"the page's libraries in {place} lack {asset.package}/{asset.path}; "
                    f"install them with 'npm install --prefix {place} {install}'"
                )
            if _sha256(path) != asset.sha256:
                raise BadInputError(
                    f"{path} is not {asset.package} {asset.version}'s (its SHA-256 differs); "
                    f"install the pinned versions with 'npm install --prefix {place} {install}'"
                )
        return modules
    raise BadInputError(
        "the page's libraries (npm packages) are not installed in "
        + " or ".join(str(p) for p in places)
        + f"; install them with 'npm install --prefix {places[-1]} {install}' "
        "or name a folder with --web-assets"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _sri(sha256_hex: str) -> str:
    """A SHA-256 as a Subresource Integrity value."""
    return "sha256-" + base64.b64encode(bytes.fromhex(sha256_hex)).decode("ascii")


def check_page_tokenizer(tokenizer: dict[str, Any]) -> None:
    """Refuse, in one line, a tokenizer.json with a part tokenizers.js cannot build."""

    def types(part: Any) -> list[str]:
        if not isinstance(part, dict):
            return []
        nested = [t for key in ("normalizers", "pretokenizers", "processors")
                  for p in part.get(key) or [] for t in types(p)]  # fmt: skip
        return [str(part.get("type")), *nested]

    for part, known in PAGE_TOKENIZER_PARTS.items():
        for kind in types(tokenizer.get(part)):
            if kind not in known:
                raise BadInputError(
                    f"the model's tokenizer has a {kind} {part.replace('_', '-')}, which the "
                    f"page's tokenizer library ({TOKENIZERS} {PACKAGES[TOKENIZERS]}) cannot "
                    "run; export it without --web"
                )


def export_web(model: Any, out: str | Path, options: WebOptions | None = None) -> Path:
    """Write a folder that runs the classifier in a browser, served by any static file server.

    ``model`` is a :class:`~bertprobe.Classifier` or a model folder; ``out`` a new or empty
    folder, or an earlier export (which is replaced whole). Every model
    :func:`~bertprobe.export.export_classifier` takes runs in the page: single- and multi-label
    (a bar and the threshold per label), one that votes with a TF-IDF model (``tfidf.json``,
    computed in the page as :class:`~bertprobe.export.TfidfVote` does) and one that chunks long
    texts (its windows cut in the page as the tokenizer cuts them); the page says when a text is
    truncated or read in windows. Refused in one line, before anything is written: a
    destination holding something else, libraries missing or not the pinned ones (see the
    module docstring), a tokenizer the page's library cannot build, a graph too large for
    WASM memory. Returns ``out``.

    Example:
        >>> export_web("models/sst2-minilm-auto", "site")  # doctest: +SKIP
        PosixPath('site')
    """
    options = options or WebOptions()
    if not options.examples or not all(isinstance(e, str) and e.strip() for e in options.examples):
        raise BadInputError("the page's examples must be texts that are not empty")
    modules = find_web_assets(options.web_assets)
    destination = check_export_destination(out).absolute()
    scratch = Path(tempfile.mkdtemp(prefix=f".{destination.name}.graph.", dir=_parent(destination)))
    try:
        graph = export_classifier(model, scratch / "export", int8=not options.fp32,
                                  check=options.check)  # fmt: skip
        written = sorted(p.name for p in graph.iterdir())
        if not set(written) <= {*EXPORT_FILES, VOTE_FILE}:
            raise BadInputError(
                f"the model's graph was written as several files ({', '.join(written)}): too "
                "large for the browser's 32-bit WASM memory; export it without --web"
            )
        if (graph / "model.onnx").stat().st_size > MAX_GRAPH_BYTES:
            raise BadInputError(
                "the model's graph is over 2 GB: too large for the browser's 32-bit WASM memory; "
                "export it without --web"
            )
        tokenizer = json.loads((graph / "tokenizer.json").read_text(encoding="utf-8"))
        check_page_tokenizer(tokenizer)
        card = json.loads((graph / "card.json").read_text(encoding="utf-8"))
        with staged_folder(destination) as staging:
            for name in written:
                shutil.move(graph / name, staging / name)
            (staging / VENDOR).mkdir()
            web: dict[str, Any] = {"packages": dict(PACKAGES), "files": {}}
            for asset in ASSETS:
                target = asset.target if asset.path != "LICENSE" else f"{VENDOR}/LICENSE.tokenizers"
                shutil.copyfile(modules / asset.package / asset.path, staging / target)
                web["files"][target] = {
                    "package": asset.package,
                    "version": asset.version,
                    "license": asset.license,
                    "sha256": asset.sha256,
                    "integrity": _sri(asset.sha256),
                }
            card["web"] = web
            (staging / "card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
            (staging / "classifier.js").write_bytes(_template("classifier.js").encode("utf-8"))
            page = _page(card, options.examples)
            (staging / "index.html").write_bytes(page.encode("utf-8"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return destination


def _parent(destination: Path) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    return destination.parent


def _template(name: str) -> str:
    return (files("bertprobe") / "templates" / "web" / name).read_text(encoding="utf-8")


def _page(card: dict[str, Any], examples: tuple[str, ...]) -> str:
    """index.html: the template with the import map (and its integrity), the examples and the
    page's settings filled in."""
    integrity = {name: entry["integrity"] for name, entry in card["web"]["files"].items()}
    sri = {f"./{name}": value for name, value in integrity.items() if name.endswith(".mjs")}
    classifier_js = _template("classifier.js").encode("utf-8")
    sri["./classifier.js"] = _sri(hashlib.sha256(classifier_js).hexdigest())
    import_map = {
        "imports": {
            "onnxruntime-web": f"./{VENDOR}/ort.wasm.min.mjs",
            "tokenizers": f"./{VENDOR}/tokenizers.min.mjs",
        },
        "integrity": sri,
    }
    settings = {
        "textColumns": list(TEXT_COLUMN_NAMES),
        "labelColumns": list(LABEL_COLUMN_NAMES),
        "wasm": f"{VENDOR}/ort-wasm-simd-threaded.wasm",
        "wasmIntegrity": integrity[f"{VENDOR}/ort-wasm-simd-threaded.wasm"],
    }
    buttons = "\n    ".join(
        f'<button type="button" class="example">{html.escape(e)}</button>' for e in examples
    )
    return (
        _template("index.html")
        .replace("{{IMPORT_MAP}}", _script_json(import_map))
        .replace("{{SETTINGS}}", _script_json(settings))
        .replace("{{EXAMPLES}}", buttons)
        .replace("{{PAPAPARSE_INTEGRITY}}", integrity[f"{VENDOR}/papaparse.min.js"])
    )


def _script_json(value: Any) -> str:
    """JSON to put inside a <script> element: no "</" can close it early."""
    return json.dumps(value, indent=2).replace("</", "<\\/")
