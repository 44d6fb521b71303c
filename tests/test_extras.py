"""Optional parts (extras): a missing package is one line naming the extra to install."""

from __future__ import annotations

import importlib
import re
import sys
import tomllib
from pathlib import Path

import pytest

from bertprobe.core.errors import BertprobeError, MissingExtraError
from bertprobe.core.extras import EXTRAS, needs_extra, require_extra

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def missing(monkeypatch, *modules: str) -> None:
    """Make ``import module`` fail as if the package were not installed (None in sys.modules)."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def check(info: pytest.ExceptionInfo, extra: str, module: str) -> None:
    message = str(info.value)
    assert message == (
        f"bertprobe[{extra}] is not installed (no module named {module!r}); "
        f"pip install 'bertprobe[{extra}]'"
    )
    assert len(message.splitlines()) == 1
    assert isinstance(info.value, BertprobeError) and isinstance(info.value, ImportError)
    assert info.value.extra == extra and info.value.name == module


def test_extras_match_pyproject():
    extras = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        names = {re.match(r"[A-Za-z0-9_.-]+", r).group().lower() for r in extras[extra]}
        assert names == set(modules), extra
    assert extras["all"] == [f"bertprobe[{','.join(EXTRAS)}]"]
    core = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    optional = {m for modules in EXTRAS.values() for m in modules}
    assert not any(re.match(r"[A-Za-z0-9_.-]+", r).group().lower() in optional for r in core)


@pytest.mark.parametrize("module", ["fastapi", "pydantic"])
def test_serve_module_without_its_extra(monkeypatch, module):
    missing(monkeypatch, module)
    for name in [m for m in sys.modules if m.split(".")[:2] == ["bertprobe", "serve"]]:
        monkeypatch.delitem(sys.modules, name)  # the package and its modules, imported afresh
    with pytest.raises(MissingExtraError) as info:
        importlib.import_module("bertprobe.serve")
    check(info, "serve", module)


def test_serve_without_uvicorn(monkeypatch):
    from bertprobe import serve

    missing(monkeypatch, "uvicorn")
    with pytest.raises(MissingExtraError) as info:
        serve.serve(None)  # the import comes first
    check(info, "serve", "uvicorn")


def test_onnx_session_without_onnxruntime(monkeypatch, tmp_path):
    from bertprobe.encoders.onnx import onnx_session

    missing(monkeypatch, "onnxruntime")
    with pytest.raises(MissingExtraError) as info:
        onnx_session(tmp_path / "model.onnx")
    check(info, "onnx", "onnxruntime")


def test_quantizer_without_onnx(monkeypatch, tmp_path):
    from bertprobe.encoders.onnx import _quantize

    missing(monkeypatch, "onnxruntime.quantization", "onnx")
    with pytest.raises(MissingExtraError) as info:
        _quantize(tmp_path / "model.onnx", tmp_path / "model.int8.onnx")
    assert info.value.extra == "onnx"


@pytest.mark.parametrize("module", ["onnx", "onnxruntime"])
def test_onnx_backend_is_refused_before_loading_weights(monkeypatch, tiny_distilbert, module):
    from bertprobe.encoders.encoder import LoadedEncoder
    from bertprobe.encoders.hub import resolve_encoder

    def must_not_load(*args, **kwargs):
        raise AssertionError("weights loaded before the extra was checked")

    missing(monkeypatch, module)
    monkeypatch.setattr("transformers.AutoModel.from_pretrained", must_not_load)
    with pytest.raises(MissingExtraError) as info:
        LoadedEncoder(resolve_encoder(str(tiny_distilbert)), backend="onnx-int8")
    check(info, "onnx", module)


def test_cli_says_which_extra_in_one_line(
    monkeypatch, tiny_distilbert, sentiment_tsv, tmp_path, capsys
):
    from bertprobe.cli import main
    from bertprobe.encoders.encoder import _load

    _load.cache_clear()
    missing(monkeypatch, "onnx")
    argv = ["embed", str(sentiment_tsv), "--encoder", str(tiny_distilbert), "--backend", "onnx"]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(tmp_path / "v.npy")])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert not any("Traceback" in line for line in err)
    assert err[-1] == (
        "bertprobe: error: bertprobe[onnx] is not installed (no module named 'onnx'); "
        "pip install 'bertprobe[onnx]'"
    )
    assert not (tmp_path / "v.npy").exists()


def test_report_plots_without_matplotlib(monkeypatch):
    from bertprobe.report import plot_sweep

    missing(monkeypatch, "matplotlib", "matplotlib.pyplot")
    with pytest.raises(MissingExtraError) as info:
        plot_sweep({"rows": []})
    check(info, "report", "matplotlib")


def test_report_page_without_jinja2(monkeypatch, tmp_path):
    from bertprobe.report import write_report

    missing(monkeypatch, "jinja2")
    with pytest.raises(MissingExtraError) as info:
        write_report(None, tmp_path / "report")  # the import comes first
    check(info, "report", "jinja2")
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize(("extra", "module"), [(e, m) for e, ms in EXTRAS.items() for m in ms])
def test_require_extra_finds_without_importing(monkeypatch, extra, module):
    require_extra(extra)  # everything is installed for the tests
    missing(monkeypatch, module)
    with pytest.raises(MissingExtraError) as info:
        require_extra(extra)
    check(info, extra, module)


def test_needs_extra_leaves_other_errors_alone():
    with pytest.raises(ImportError, match="cannot import name"), needs_extra("report"):
        from jinja2 import no_such_name  # noqa: F401
    with pytest.raises(ValueError, match="unknown extra"), needs_extra("gpu"):
        pass
