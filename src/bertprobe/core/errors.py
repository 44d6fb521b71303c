"""Errors a user can fix.

Every problem caused by input (a file, a column, an encoder name, a model folder) is raised as a
:class:`BertprobeError` whose message is one line that says what is wrong, where, and how to fix
it. The CLI prints that line and exits with status 2. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class BertprobeError(Exception):
    """A problem with the user's input, explained in one line."""


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
            f"pip install 'bertprobe[{extra}]'",
            name=module,
        )
        self.extra = extra
