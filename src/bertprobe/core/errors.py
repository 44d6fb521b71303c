"""Errors a user can fix.

Every problem caused by input (a file, a column, an encoder name, a model folder) is raised as a
:class:`BertprobeError` whose message is one line that says what is wrong, where, and how to fix
it. The CLI prints that line and exits with status 2. Anything else is a bug and keeps its
traceback.

An error about a parameter says which (``param``): its message names it as a Python caller
writes it (``window_pool='x': ...``, ``pass drop_empty=True``), and a shell that calls it
something else (the CLI: ``--window-pool``, ``--drop-empty``) rewrites that name, and only that
name, through its own table (:meth:`BertprobeError.in_words`). Renaming a parameter then shows
in the tests (the table has no entry for the new name) instead of leaving a stale message.

Example:
    >>> error = BadInputError("window_pool='x': choose mean or max", param="window_pool")
    >>> error.in_words({"window_pool": "--window-pool"})
    "--window-pool 'x': choose mean or max"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def _as_params(param: str | Sequence[str] | None) -> tuple[str, ...]:
    return (param,) if isinstance(param, str) else tuple(param or ())


def in_words(text: str, params: Sequence[str], words: Mapping[str, str | None]) -> str:
    """``text`` with each of ``params`` named as ``words`` names it.

    A parameter ``name`` is written ``name=`` in ``text`` (``name='x'``, ``pass name=`` ...),
    or, for a switch given as ``name=True``, as that whole setting; its word replaces that
    spelling (``--name`` ... or ``--switch``), with a space before a value. A parameter
    without a word (``None``: no shell flag sets it) keeps its spelling.

    >>> in_words("set text_col= and label_col=", ("text_col", "label_col"),
    ...          {"text_col": "--text-col", "label_col": "--label-col"})
    'set --text-col and --label-col'
    """
    for param in sorted(params, key=len, reverse=True):  # "max_length" before "length"
        word = words.get(param)
        if word is None:
            continue
        spelled = param if "=" in param else f"{param}="
        text = _replace_spelled(text, spelled, word, switch="=" in param)
    return text


def _replace_spelled(text: str, spelled: str, word: str, *, switch: bool) -> str:
    """Each whole occurrence of ``spelled`` (not the tail of a longer name or a path) as
    ``word``, followed by a space where a value follows ``name=``."""
    out, at = [], 0
    while (found := text.find(spelled, at)) != -1:
        before = text[found - 1] if found else " "
        end = found + len(spelled)
        if before.isalnum() or before in "_./\\-":
            out.append(text[at:end])
            at = end
            continue
        ends = switch or end == len(text) or text[end] in ",;:) "
        out.append(text[at:found] + word + ("" if ends else " "))
        at = end
    return "".join(out) + text[at:]


class Message(str):
    """A one-line message (a note, a warning) that names parameters, as an error does: a
    ``str`` with :attr:`params` (see :func:`in_words`)."""

    params: tuple[str, ...]

    def __new__(cls, text: str, *, param: str | Sequence[str] | None = None) -> Message:
        message = super().__new__(cls, text)
        message.params = _as_params(param)
        return message

    def in_words(self, words: Mapping[str, str | None]) -> str:
        """This message with its parameters as ``words`` names them (see :func:`in_words`)."""
        return in_words(str(self), self.params, words)


class BertprobeError(Exception):
    """A problem with the user's input, explained in one line.

    Parameters
    ----------
    message : str
        What is wrong, where, and how to fix it.
    param : str or sequence of str, optional
        The parameters the message names, as a Python caller spells them (``"window_pool"``;
        a switch as it is set, ``"drop_empty=True"``): what :meth:`in_words` rewrites.
    """

    def __init__(self, message: str = "", *, param: str | Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.params: tuple[str, ...] = _as_params(param)

    def in_words(self, words: Mapping[str, str | None]) -> str:
        """The message with :attr:`params` as ``words`` names them (see :func:`in_words`)."""
        return in_words(str(self), self.params, words)

    def about(self, where: str) -> BertprobeError:
        """The same error said of ``where`` (a file, a sample): ``"{where}: {message}"``, of
        the same class and about the same parameters; raise it ``from None``."""
        error = type(self).__new__(type(self))
        BertprobeError.__init__(error, f"{where}: {self}", param=self.params)
        return error


class BadInputError(BertprobeError, ValueError):
    """Bad data or arguments. Also a ValueError, as scikit-learn estimators raise."""


class EncoderNotFoundError(BertprobeError):
    """The encoder name is neither a local folder nor loadable from the hub or its cache."""


class ModelFolderError(BertprobeError):
    """A saved model folder is missing, not ours, altered, or no longer matches its encoder."""


class MissingExtraError(BertprobeError, ImportError):
    """A feature needs an optional part of bertprobe (an extra) that is not installed.

    Also an ImportError, so ``except ImportError`` around an optional import still catches it.
    """

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"bertprobe[{extra}] is not installed (no module named {module!r}); "
            f"pip install 'bertprobe[{extra}]'"
        )
        self.name = module  # ImportError's: the module that could not be imported
        self.extra = extra
