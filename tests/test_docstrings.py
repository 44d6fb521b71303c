"""Every example in the package's docstrings runs and shows what it says (doctest)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import bertprobe

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(bertprobe.__path__, prefix="bertprobe.")
    if name != "bertprobe.__main__"  # running it is running the CLI
)


def test_every_module_is_collected():
    assert {
        "bertprobe.model",
        "bertprobe.encoders.encode",
        "bertprobe.training.sweep",
        "bertprobe.model.train",
        "bertprobe.heads.probe",
    } <= set(MODULES)


@pytest.mark.slow  # bertprobe.training.sweep example runs the bundled encoder
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(
        importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    )
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
