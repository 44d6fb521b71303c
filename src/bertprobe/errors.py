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
