"""Errors that name a parameter say which, and the CLI names it by its flag.

A library error names a parameter as a Python caller writes it (``window_pool='x'``) and
declares it (``param=``); the CLI rewrites exactly the declared names through its one table
(:data:`bertprobe.cli.errors.WORDS`). These tests read every ``raise`` in the package, so a new
message that names a parameter without declaring it, or declares one the table lacks, fails
here instead of reaching a CLI user in the library's words.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import bertprobe
from bertprobe.cli.errors import WORDS, in_cli_words
from bertprobe.core.errors import BadInputError, Message, in_words

SOURCE = Path(bertprobe.__file__).parent
# A parameter as a message spells it: a name (not the tail of a path or longer name) and "=".
SPELLED = re.compile(r"(?<![\w./\\-])([A-Za-z_][A-Za-z0-9_]*)=(True|False)?")
ERRORS = {"BertprobeError", "BadInputError", "EncoderNotFoundError", "ModelFolderError"}


def _calls():
    """Every call that makes an error or a message in the package: (where, call node), the
    call's message parts resolved through the names its function assigns (a message built
    in pieces: ``help = "use encoder=minilm"``, then ``f"...; {help}"``)."""
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for scope in ast.walk(tree):
            if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
                continue
            assigned = {
                target.id: node.value
                for node in ast.walk(scope)
                if isinstance(node, ast.Assign)
                for target in node.targets
                if isinstance(target, ast.Name)
            }
            for node in (
                ast.iter_child_nodes(scope) if isinstance(scope, ast.Module) else ast.walk(scope)
            ):
                if isinstance(node, ast.Call):
                    name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                    if name in ERRORS | {"Message"}:
                        node.assigned = assigned  # type: ignore[attr-defined]
                        yield f"{path.relative_to(SOURCE)}:{node.lineno}", node


def _spelled(call: ast.Call) -> set[str]:
    """The parameters the call's message spells in its literal text."""
    assigned = getattr(call, "assigned", {})
    parts = [part for arg in call.args for part in ast.walk(arg)]
    parts += [
        piece
        for part in parts
        if isinstance(part, ast.Name) and part.id in assigned
        for piece in ast.walk(assigned[part.id])
    ]
    text = "\n".join(
        part.value
        for part in parts
        if isinstance(part, ast.Constant) and isinstance(part.value, str)
    )
    return {
        f"{m[1]}={m[2]}" if m[2] and f"{m[1]}={m[2]}" in WORDS else m[1]
        for m in SPELLED.finditer(text)
    }


def _declared(call: ast.Call) -> set[str] | None:
    """The parameters the call declares (``param=``), None when they are not literals."""
    for keyword in call.keywords:
        if keyword.arg == "param":
            try:
                value = ast.literal_eval(keyword.value)
            except ValueError:
                return None  # computed: a validator's own name, checked where it is called
            return {value} if isinstance(value, str) else set(value)
    return set()


CALLS = list(_calls())


def test_every_parameter_a_message_spells_is_declared():
    undeclared = {
        where: sorted(_spelled(call) - declared)
        for where, call in CALLS
        if (declared := _declared(call)) is not None and _spelled(call) - declared
    }
    assert not undeclared, f"messages that spell a parameter they do not declare: {undeclared}"


def test_every_declared_parameter_is_in_the_cli_table():
    missing = {
        where: sorted(declared - set(WORDS))
        for where, call in CALLS
        if (declared := _declared(call)) and declared - set(WORDS)
    }
    assert not missing, f"parameters the CLI has no word for (add them to WORDS): {missing}"


def test_the_cli_table_has_no_parameter_nothing_declares():
    from dataclasses import fields

    from bertprobe.data.files import ReadOptions
    from bertprobe.encoders.options import RunOptions
    from bertprobe.serve.config import ServeLimits

    declared = set().union(*(d for _, call in CALLS if (d := _declared(call))))
    # Declared by name where a validator checks each field of these in turn.
    computed = {f.name for cls in (ServeLimits, RunOptions, ReadOptions) for f in fields(cls)}
    assert set(WORDS) - declared - computed - _passed_to_validators() == set()


def _passed_to_validators() -> set[str]:
    """The names given to a validator that declares the one it is passed (``param="x"`` on a
    call that is not an error's)."""
    names = set()
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") not in ERRORS:
                names |= {
                    k.value.value
                    for k in node.keywords
                    if k.arg == "param" and isinstance(k.value, ast.Constant)
                }
    return names


def test_every_flag_in_the_table_is_one_the_cli_has():
    from typer.main import get_command

    from bertprobe.cli import app

    flags = {
        opt
        for command in get_command(app).commands.values()  # type: ignore[attr-defined]
        for param in command.params
        for opt in param.opts
    }
    assert {flag for flag in WORDS.values() if flag} <= flags


@pytest.mark.parametrize("param", sorted(p for p, flag in WORDS.items() if flag))
def test_each_flagged_parameter_reaches_the_cli_as_its_flag(param):
    """A message naming the parameter, as the library writes it, in the CLI's words: the
    flag is there and the Python spelling is not."""
    spelled = param if "=" in param else f"{param}=3"
    error = BadInputError(
        f"{spelled}: out of range; or pass {param}{'' if '=' in param else '='}", param=param
    )
    shown = in_cli_words(error)
    assert WORDS[param] in shown
    assert not SPELLED.search(shown.replace(" --", " ")), shown


@given(
    words=st.lists(
        st.sampled_from(["the", "file", "a/b_cv=", "x-cv=", "max_cv=", ","]), max_size=6
    ),
    value=st.sampled_from(["3", "'x'", ""]),
)
def test_only_the_declared_parameter_is_rewritten(words, value):
    """A name that is the tail of a path or a longer name (``a/b_cv=``, ``max_cv=``) is
    left alone; the declared one, wherever it stands, becomes its flag."""
    text = " ".join([*words, f"cv={value}", *words])
    shown = in_words(text, ("cv",), {"cv": "--cv"})
    assert shown.count("--cv") == 1
    assert (
        shown.replace(f"--cv{' ' if value else ''}{value}", "").count("cv=")
        == text.count("cv=") - 1
    )


def test_a_message_keeps_the_spelling_of_a_parameter_no_flag_sets():
    assert Message("classes= names 3 labels", param="classes").in_words(WORDS) == (
        "classes= names 3 labels"
    )


def test_an_error_said_of_a_file_keeps_its_parameters():
    error = BadInputError("label_col=5 is out of range", param="label_col").about("data.tsv")
    assert isinstance(error, BadInputError) and error.params == ("label_col",)
    assert in_cli_words(error) == "data.tsv: --label-col 5 is out of range"
