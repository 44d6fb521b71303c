"""A fuzz test of the whole command line: Hypothesis draws commands, options and values.

The property, for every invocation: the exit status is 0 (it worked), 2 (a usage error or bad
input, said in one line) or 130 (interrupted), and no traceback reaches either stream. The
commands and their options are read from the CLI itself, so a new option is fuzzed the day it
is added. Values are drawn for each option's type: numbers at and past their declared bounds,
meaningful and odd strings, and paths to good files, missing files, folders, files that are not
what the option wants and files with bytes that are not UTF-8. Everything runs in-process on
the tiny DistilBERT and small files; ``serve`` binds its socket and stops before listening.

``make test`` runs a fixed set of examples (``derandomize``), so CI is repeatable; ``make
fuzz`` runs thousands of fresh ones (``BERTPROBE_FUZZ_EXAMPLES``) and prints how many it tried.
"""

from __future__ import annotations

import io
import os
import re
import socket
import sys
import time
import traceback
import typing
import warnings
from collections import Counter
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.main import get_command

from bertprobe.cli import app, main
from bertprobe.cli.errors import WORDS

EXAMPLES = int(os.environ.get("BERTPROBE_FUZZ_EXAMPLES", "210"))
FRESH = "BERTPROBE_FUZZ_EXAMPLES" in os.environ
LOG = os.environ.get("BERTPROBE_FUZZ_LOG")  # a line per invocation: exit, argv, last line
COMMAND = get_command(app)
# The library's spelling of each parameter the CLI has a flag for (bertprobe.cli.errors.WORDS):
# name= (or a switch as set), not the tail of a path or of a longer name.
FLAGGED = {
    name: re.compile(r"(?<![\w./\\-])" + re.escape(name if "=" in name else f"{name}="))
    for name, flag in WORDS.items()
    if flag
}

# Characters a shell can pass in an argument (no NUL); lone surrogates stand for undecodable
# bytes, as Python decodes argv with surrogateescape.
ODD_STRINGS = st.one_of(
    st.sampled_from(
        [
            "",
            " ",
            "-",
            "--",
            "0",
            "-1",
            "1e3",
            "nan",
            "inf",
            "-inf",
            "1,,2",
            ",",
            "a,b",
            "\u00e9t\u00e9",
            "\udcff",
            "x" * 300,
            "$HOME",
            "*",
            "../..",
            "~",
        ]
    ),
    st.text(st.characters(exclude_characters="\x00"), max_size=12),
)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_distilbert, tiny_model_dir, sentiment_rows):
    """Files of every kind the options may be pointed at, and a port that is taken."""
    root = tmp_path_factory.mktemp("fuzz")
    rows = sentiment_rows  # labels alternate: both classes in any prefix
    files = {
        "good.tsv": "".join(f"{t}\t{y}\n" for t, y in rows[:40]),
        "strings.tsv": "".join(f"{t}\t{'pos' if y else 'neg'}\n" for t, y in rows[:40]),
        "header.csv": "text,label\n" + "".join(f"{t},{y}\n" for t, y in rows[:30]),
        "rows.jsonl": "".join(f'{{"text": "{t}", "label": {y}}}\n' for t, y in rows[:30]),
        "texts.txt": "the film was great\nthe plot was awful\n",
        # Unlabelled texts to choose from (suggest --pool).
        "pool.txt": "".join(f"{t}\n" for t, _ in rows[40:56]),
        "empty.tsv": "",
        "mixed.tsv": "".join(f"{t}\t{y}\n" for t, y in rows[:20]) + "so-so\t2\nmeh\tmaybe\n",
        "one_class.tsv": "good\t1\nfine\t1\n",
        "sorted.tsv": "".join(f"{t}\t{y}\n" for t, y in sorted(rows[:40], key=lambda r: r[1])),
        "ragged.tsv": "a\t1\tb\nc\n\t\n",
        # Several labels per text, both ways: joined in "label" and as the 0/1 columns a, b.
        "multi.csv": "text,label,a,b\n"
        + "".join(
            f"{t},{('a', 'b', 'a|b')[i % 3]},{int(i % 3 != 1)},{int(i % 3 != 0)}\n"
            for i, (t, _) in enumerate(rows[:30])
        ),
    }
    paths = {}
    for name, text in files.items():
        paths[name] = root / name
        paths[name].write_text(text, encoding="utf-8")
    paths["latin1.tsv"] = root / "latin1.tsv"
    paths["latin1.tsv"].write_bytes("fine\t1\ncaf\u00e9\t0\n".encode("latin-1"))
    paths["folder"] = root / "folder"
    paths["folder"].mkdir()
    paths["features.npy"] = root / "features.npy"
    paths["features.npy"].write_bytes(b"\x93NUMPY not really")
    # good.tsv's vectors as `embed` writes them, for `train --out-of-core --features`.
    paths["features.parquet"] = root / "features.parquet"
    embed = ["embed", paths["good.tsv"], "--encoder", tiny_distilbert, "--pooling", "mean"]
    assert run_in_process([*map(str, embed), "--out", str(paths["features.parquet"])])[0] == 0
    taken = socket.create_server(("127.0.0.1", 0))
    for name in (
        "missing.tsv",
        "new",
        "new-sweep",
        "new-report",
        "new-export",
        "new.npy",
        "new.csv",
        "new.tsv",
        "new.jsonl",
        "new.html",
        "new.png",
        "labelled.tsv",
        "cache",
    ):
        paths[name] = root / name
    paths["under-a-file"] = paths["texts.txt"] / "under-a-file"
    files = {name: str(path) for name, path in paths.items()}
    pool = [*files.values(), str(tiny_model_dir), str(tiny_distilbert), "-"]
    yield {
        "paths": pool,
        "files": files,
        "model": str(tiny_model_dir),
        "tiny": str(tiny_distilbert),
        "port": taken.getsockname()[1],
    }
    taken.close()


def _base_types() -> dict[tuple[str, str], type]:
    """(command, parameter) -> the parameter's Python type, from the commands' own signatures
    (the CLI library's parameter classes differ between releases; our annotations do not)."""
    types = {}
    for info in app.registered_commands:
        name = info.name or info.callback.__name__
        for param, hint in typing.get_type_hints(info.callback).items():
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            while args and typing.get_origin(hint) is not None:
                hint, args = args[0], [a for a in typing.get_args(args[0]) if a is not type(None)]
            types[name, param] = hint
    return types


BASE_TYPES = _base_types()


def _good_values(world: dict) -> dict[str, list[str]]:
    """Values that make sense for an option, by parameter name: most draws use one, so most
    invocations get past parsing and reach real work."""
    files = world["files"]
    labelled = [
        files["good.tsv"],
        files["header.csv"],
        files["rows.jsonl"],
        files["strings.tsv"],
        files["mixed.tsv"],
        files["sorted.tsv"],
        files["multi.csv"],
    ]
    return {
        "data": labelled,
        "test": labelled,
        "train_file": labelled,
        "input_file": [files["texts.txt"], files["good.tsv"]],
        "pool": [files["pool.txt"], files["texts.txt"]],
        "suggest.n": ["1", "2", "3"],
        "labelled": [files["good.tsv"]],
        "suggest.out": [files["new.tsv"]],
        "labels": ["pos,neg", "0,1,2"],
        "label.n": ["1", "2", "3"],
        "label.out": [files["labelled.tsv"]],
        "model_dir": [world["model"]],
        "out": [files["new"]],
        "embed.out": [files["new.npy"]],
        "sweep.out": [files["new-sweep"]],
        "report.out": [files["new-report"]],
        "export.out": [files["new-export"]],
        "output": [files["new.csv"], files["new.jsonl"]],
        "cache_dir": [files["cache"]],
        "encoder": [world["tiny"]],
        "encoders": [world["tiny"]],
        "compare.plot": [files["new.png"]],
        "pooling": ["cls", "mean", "max"],
        "poolings": ["cls,mean,max", "mean"],
        "layer": ["-1", "0", "-2,-1"],
        "c_grid": ["coarse", "0.1,1"],
        "device": ["cpu"],
        "backend": ["torch", "onnx", "onnx-int8"],
        "text_col": ["0", "text"],
        "label_col": ["1", "label"],
        "host": ["127.0.0.1", "localhost"],
        "api_key": ["s3cret-key"],
        "cors_origin": ["http://localhost:3000", "*"],
        "texts": ["the film was great", "the plot was awful", "-"],
        "cv": ["2", "3"],
        "jobs": ["1", "-1"],
        "port": ["8123"],
        "epochs": ["1", "2"],
        "lr": ["5e-4"],
        "dev_share": ["0.2"],
        "dev": labelled,
        "features": [files["features.parquet"]],
        "finalists": ["0", "1", "3"],
        "class_weight": ["balanced"],
        "metric": ["accuracy", "balanced_accuracy", "f1_macro", "roc_auc"],
        "label_issues": [files["new.csv"]],
        # The fixture model is saved without a decision threshold: numbers, not "auto".
        "threshold": ["0.5", "0.3"],
        "label_sep": ["|"],
        "label_cols": ["a,b"],
        "long": ["truncate", "chunk"],
        "stride": ["0", "4"],
        "window_pool": ["mean", "max"],
        "max_text_chars": ["10000000", "100000"],
        "method": ["auto", "exact", "occlusion"],
        "occlude": ["delete", "mask"],
        "html": [files["new.html"]],
        "strategy": ["uncertain", "typical"],
        "label.zero_shot": ["pos=a good film", "neg"],
        "template": ["{}", "a {} film"],
        "distill": [world["model"]],
        "augment": ["0", "1"],
        "temperature": ["1", "2"],
        "patience": ["1", "2"],
        # a sqlite store beside the files: a tracked run does the whole job, quickly
        "track": [f"sqlite:///{Path(files['cache']).parent / 'runs.db'}"],
        "experiment": ["fuzz"],
        "register": ["fuzzed"],
        "alias": ["champion"],
    }


def _odd_values(world: dict) -> dict[str, list[str]]:
    """Values a user gets wrong, by parameter name (beside the odd strings and numbers)."""
    return {
        "encoder": ["minilm", "distilbert-base-uncased", world["model"], "no/such-model"]
        + world["paths"],
        "pooling": ["sum", "CLS"],
        "long": ["split", "CHUNK"],
        "window_pool": ["cls", "sum"],
        "max_text_chars": ["1", "5", str(2**63)],
        "poolings": ["mean,mean", "sum", "cls,"],
        "layer": ["1", "2", "9", "-9", "a", "0,0", "99999999999999999999"],
        "c_grid": ["default", "seed", "0", "-1", "1e400", "a,b"],
        "device": ["cuda", "cuda:1", "mps", "meta", "tpu", "cpu:0"],
        "backend": ["tensorflow", "ONNX"],
        "text_col": ["2", "-1", "label", "review"],
        "label_col": ["0", "2", "-1", "review"],
        "host": ["::1"],
        "texts": [" ", "x" * 3000],
        "port": [str(world["port"])],
        "class_weight": ["Balanced", "auto"],
        "metric": ["auc", "f1"],
        "threshold": ["auto", "0", "1", "nan", "-0.1"],
        "method": ["best", "EXACT"],
        "occlude": ["blank"],
        "strategy": ["random", "Typical"],
        "template": ["no slot", "{} and {}"],
    }


def _bound(param, which: str) -> int | float | None:
    value = getattr(param, which, None)  # typer >= 0.2x keeps ranges on the parameter ...
    return value if value is not None else getattr(getattr(param, "type", None), which, None)


def _numbers(param) -> list[str]:
    """Numbers at and past the declared bounds, and a few anywhere."""
    edges = [-1, 0, 1, 2, 3, 64, 10**6, -(10**6), 2**63]
    for bound in (_bound(param, "min"), _bound(param, "max")):
        if bound is not None:
            edges += [bound - 1, bound, bound + 1]
    if param.name == "port":
        edges = [e for e in edges if e not in (0, 8000)]  # 0 or a guess could be a real server
    return sorted({str(e) for e in edges})


def _in_range(param) -> list[str]:
    low, high = _bound(param, "min"), _bound(param, "max")
    return [
        n
        for n in ("0", "1", "2", "3", "8", "32", "64")
        if (low is None or int(n) >= low) and (high is None or int(n) <= high)
    ]


def _option_value(command: str, param, world: dict, careful: bool) -> st.SearchStrategy[str]:
    """A sensible value (always when ``careful``), or an odd one for the option's name and
    type."""
    kind = BASE_TYPES[command, param.name]
    odd = list(_odd_values(world).get(param.name, []))
    if kind in (int, float):
        odd += _numbers(param)
    if kind is Path:
        odd += world["paths"]
    values = _good_values(world)
    good = (
        values.get(f"{command}.{param.name}")
        or values.get(param.name)
        or (_in_range(param) if kind in (int, float) else None)
    )
    wrong = st.one_of(st.sampled_from(odd), ODD_STRINGS) if odd else ODD_STRINGS
    if good is None:
        return wrong
    return st.sampled_from(good) if careful else st.one_of(st.sampled_from(good), wrong)


@st.composite
def invocations(draw, world: dict, name: str) -> list[str]:
    """One command line of command ``name``. Half are careful (sensible values, so real work
    runs with unusual combinations of options); the other half are sloppy (odd values, missing
    or unknown arguments)."""
    command = COMMAND.commands[name]
    careful = draw(st.booleans())
    argv = [name]
    # About six options a draw: a command with many (train) would otherwise draw a dozen,
    # which seldom all run together, and its careful draws would seldom reach real work.
    odds = max(3, len(command.params) // 6)
    for param in command.params:
        if param.param_type_name == "argument":
            count = (
                draw(st.integers(0, 2))
                if param.nargs == -1
                else (1 if careful else draw(st.sampled_from([1, 1, 1, 0, 2])))
            )
            argv += [draw(_option_value(name, param, world, careful)) for _ in range(count)]
        elif (
            param.required
            or (careful and param.name == "encoder")
            or draw(st.integers(0, odds)) == 0
        ):
            if param.required and not careful and draw(st.booleans()):
                continue  # a required option left out
            if param.is_flag:
                argv.append(draw(st.sampled_from(param.opts + param.secondary_opts)))
            else:
                argv += [
                    draw(st.sampled_from(param.opts)),
                    draw(_option_value(name, param, world, careful)),
                ]
    if careful and "--features" in argv and "--out-of-core" not in argv:
        argv.append("--out-of-core")  # what --features is for
    if careful and name == "train":
        argv = _careful_train(argv)
    if careful and "--stride" in argv:  # what --stride is for
        if "--long" in argv:
            argv[argv.index("--long") + 1] = "chunk"
        else:
            argv += ["--long", "chunk"]
    if careful and "--ray" not in argv:  # Ray's own options only with --ray
        argv = _without(argv, {"--actors", "--actor-cpus"}, set())
    if careful and name == "suggest":  # with a model, or (no model yet) an encoder: one
        if {"-m", "--model"} & set(argv):
            argv = _without(argv, {"-e", "--encoder", "--pooling"}, set())
        elif not {"-e", "--encoder"} & set(argv):
            argv += ["--model", world["model"]]
    if careful and name in {"predict", "explain"} and not {"-i", "--input"} & set(argv):
        argv.insert(1, "the film was great")  # something to classify
    if name in {"evaluate", "report", "serve", "predict", "explain"} and "--model" not in argv:
        argv += ["--model", world["model"]]  # predict's default, ".", is rarely a model
    if not careful and draw(st.integers(0, 4)) == 0:  # something the command does not know
        argv.insert(
            draw(st.integers(1, len(argv))),
            draw(st.sampled_from(["--nosuch", "--help", "extra", "-x", "--json=1"])),
        )
    return argv


_FINETUNE_ONLY = {"--epochs", "--lr", "--seed", "--dev", "--dev-share", "--patience"}
_FINETUNE_SWITCHES = {"--bf16", "--no-bf16"}
_MULTI_LABEL_ONLY = {"--label-sep", "--label-cols"}
_MULTI_LABEL_SWITCHES = {"--tune-thresholds", "--multi-label"}
# Kept apart from multi-label draws: --features needs a matching vectors file (a careful draw
# has none), and fine-tuning each draw would make the fuzz slow.
_NOT_MULTI_LABEL = {"--features", "--finetune", "--distill"}


def _without(argv: list[str], valued: set[str], switches: set[str]) -> list[str]:
    """``argv`` less the options ``valued`` (with their values) and the ``switches``."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in valued:
            skip = True
        elif arg not in switches:
            kept.append(arg)
    return kept


def _careful_train(argv: list[str]) -> list[str]:
    """A careful train draw made to reach real work: fine-tuning options only with
    --finetune or --distill, --augment and --temperature only with --distill,
    --pairs-per-text only with --contrastive, the tracking flags only with --track, no
    --zero-shot (a draw names one class);
    --encoders only with --auto; --label-issues and --unlabelled only in memory; --stride
    only with --long chunk; --features only for good.tsv; multi-label options with
    --multi-label, and only away from the options it does not combine with."""
    if "--finetune" not in argv and "--distill" not in argv:
        argv = _without(argv, _FINETUNE_ONLY, _FINETUNE_SWITCHES)
    if "--distill" not in argv:
        argv = _without(argv, {"--augment", "--temperature"}, set())
    if "--contrastive" not in argv:
        argv = _without(argv, {"--pairs-per-text"}, set())
    if "--track" not in argv:
        argv = _without(argv, {"--experiment", "--register", "--alias"}, set())
    if "--register" not in argv:
        argv = _without(argv, {"--alias"}, set())
    # --zero-shot takes two classes or more, and a draw gives one: tests/test_zero_shot.py
    argv = _without(argv, {"--zero-shot", "--template", "--rounds", "--per-class"}, set())
    if "--auto" not in argv:
        argv = _without(argv, {"--encoders"}, set())
    if "--out-of-core" in argv:
        argv = _without(argv, {"--label-issues", "--unlabelled"}, set())
    if "chunk" not in argv:
        argv = _without(argv, {"--stride"}, set())
    if not any(arg.endswith("good.tsv") for arg in argv):  # the vectors file is good.tsv's
        argv = _without(argv, {"--features"}, set())
    multi = (_MULTI_LABEL_ONLY | _MULTI_LABEL_SWITCHES) & set(argv)
    if multi and _NOT_MULTI_LABEL & set(argv):
        return _without(argv, _MULTI_LABEL_ONLY, _MULTI_LABEL_SWITCHES)
    if multi and "--multi-label" not in argv:
        return [*argv, "--multi-label"]
    return argv


def run_in_process(argv: list[str], stdin: str = "a text from stdin\n") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    saved_stdin = sys.stdin
    sys.stdin = io.TextIOWrapper(io.BytesIO(stdin.encode()))

    def show(message, category, filename, lineno, file=None, line=None):
        err.write(warnings.formatwarning(message, category, filename, lineno, line))

    try:
        # Warnings reach the user's terminal: they are part of what is checked.
        with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = show
            try:
                main(argv)
                code: int | str | None = 0
            except SystemExit as exc:
                code = exc.code
            except BaseException:  # noqa: BLE001 - the property under test: nothing escapes
                code = "escaped"
                err.write(traceback.format_exc())
    finally:
        sys.stdin = saved_stdin
    said = err.getvalue()
    if said.startswith("bertprobe: error: "):
        # A parameter named in the library's spelling, where the CLI has a flag for it, means
        # an error that did not declare it (see tests/test_error_words.py). Checked here, not
        # in the fuzz's property, so that the property's code (which seeds its draws) stays.
        stale = [name for name in FLAGGED if re.search(FLAGGED[name], said)]
        assert not stale, f"the library's words {stale} for {argv}:\n{said}"
    return (
        code if isinstance(code, int) else (0 if code is None else -1),
        out.getvalue(),
        said,
    )


@pytest.fixture(scope="module")
def sandbox(world):
    """serve binds its socket (a taken port must fail), then returns instead of serving (with
    --workers, instead of starting them; with --ray, once its options are checked); and
    relative paths drawn (".", "-", odd names) land in a scratch folder, not the checkout."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from bertprobe.serve import ray_serve

    def checked_not_deployed(folder, config, ray, *, on_ready):
        """serve --ray: every check deploy makes before it contacts Ray, and no more."""
        ray_serve._plan(folder, config, ray)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
        patch.setattr(Multiprocess, "run", lambda self: None)  # --workers: no processes
        patch.setattr(ray_serve, "run_on_ray", checked_not_deployed)
        cwd = Path(world["files"]["folder"]).parent / "cwd"
        cwd.mkdir(exist_ok=True)
        patch.chdir(cwd)
        yield


@pytest.mark.parametrize("command", sorted(COMMAND.commands))
def test_fuzz_the_cli(command, world, sandbox):
    """Every command of the CLI, read from the CLI itself: a new one cannot hide from the fuzz.
    ``EXAMPLES`` draws in all, shared among the commands."""
    outcomes: Counter[int] = Counter()

    @settings(
        max_examples=-(-EXAMPLES // len(COMMAND.commands)),  # at least EXAMPLES in all
        deadline=None,
        derandomize=not FRESH,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(argv=invocations(world, command))
    def check(argv):
        start = time.perf_counter()
        code, out, err = run_in_process(argv)
        outcomes[code] += 1
        if LOG:
            with open(LOG, "a", encoding="utf-8") as log:
                last = (err.strip().splitlines() or [""])[-1]
                log.write(f"{code}\t{time.perf_counter() - start:.2f}\t{argv!a}\t{last[:200]!a}\n")
        assert code in (0, 2, 130), f"exit {code} for {argv}:\n{err[-3000:]}"
        assert "Traceback" not in out + err, f"traceback for {argv}:\n{err[-3000:]}"
        if code == 2 and err.startswith("bertprobe: error: "):
            assert len(err.splitlines()) == 1, f"more than one line for {argv}:\n{err}"

    check()
    print(
        f"\nfuzz {command}: {sum(outcomes.values())} invocations tried, exit status "
        + ", ".join(f"{code}: {n}" for code, n in sorted(outcomes.items())),
        file=sys.__stderr__,
    )
    assert outcomes[0] > 0 and outcomes[2] > 0  # the draws reach real work and real errors


def test_the_fuzzer_sees_a_traceback(monkeypatch):
    """The property catches what it is meant to: an exception that is not ours escapes."""
    import bertprobe.cli.predict

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(bertprobe.cli.predict.Classifier, "load", broken)
    code, _, err = run_in_process(["evaluate", "--model", "m", "x.tsv"])
    assert code == -1 and "Traceback" in err and "ZeroDivisionError" in err
