"""Library error messages in the CLI's words, on one line.

Library errors name parameters as a Python caller writes them ("Cs='x' is not ...", "pass
drop_empty=True"); the CLI user knows flags. :data:`FLAGS` and :data:`SWITCHES` are the one
table from one to the other.
"""

from __future__ import annotations

import re

FLAGS = {
    "Cs": "--c-grid",
    "cv": "--cv",
    "n_jobs": "--jobs",
    "poolings": "--poolings",
    "encoder": "--encoder",
    "revision": "--revision",
    "layers": "--layer",
    "max_length": "--max-length",
    "long": "--long",
    "stride": "--stride",
    "window_pool": "--window-pool",
    "max_field_chars": "--max-text-chars",
    "batch_size": "--batch-size",
    "max_tokens": "--max-tokens",
    "device": "--device",
    "backend": "--backend",
    "cache_dir": "--cache-dir",
    "text_col": "--text-col",
    "chunk_size": "--chunk-size",
    "batch_rows": "--chunk-size",
    "actors": "--actors",
    "cpus_per_actor": "--actor-cpus",
    "label_col": "--label-col",
    "train": "--train",
    "finetune": "--finetune",
    "epochs": "--epochs",
    "lr": "--lr",
    "seed": "--seed",
    "dev": "--dev",
    "dev_share": "--dev-share",
    "features": "--features",
    "finalists": "--finalists",
    "encoders": "--encoders",
    "class_weight": "--class-weight",
    "metric": "--metric",
    "threshold": "--threshold",
    "method": "--method",
    "occlude": "--occlude",
    "label_sep": "--label-sep",
    "label_cols": "--label-cols",
}
SWITCHES = {
    "label_issues=True": "--label-issues",
    "drop_empty=True": "--drop-empty",
    "use_cache=False": "--no-cache",
    "auto=True": "--auto",
    "out_of_core=True": "--out-of-core",
    "multi_label=True": "--multi-label",
    "tune_thresholds=True": "--tune-thresholds",
}
_PARAMETER = re.compile(r"(?<![\w./\\-])(" + "|".join(FLAGS) + r")= ?")

# Characters that end a line somewhere (str.splitlines): a path or value holding one is shown
# escaped, so the error stays one line whatever the user typed.
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def in_cli_words(message: str) -> str:
    """``message`` with the library's parameter words as the CLI's flags.

    Examples
    --------
    >>> in_cli_words("pass drop_empty=True, or a smaller max_length=")
    'pass --drop-empty, or a smaller --max-length'
    """
    for words, switch in SWITCHES.items():
        message = message.replace(words, switch)

    def as_flag(match: re.Match[str]) -> str:
        ends = match.end() == len(message) or message[match.end()] in ",;:)"
        return FLAGS[match[1]] + ("" if ends else " ")

    return _PARAMETER.sub(as_flag, message)


def one_line(message: str) -> str:
    r"""``message`` with its line breaks escaped.

    Examples
    --------
    >>> one_line("no such file: a\nb.tsv")
    'no such file: a\\nb.tsv'
    """
    return message.translate(_LINE_BREAKS)
