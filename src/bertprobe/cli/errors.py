"""Library error messages in the CLI's words, on one line.

Library errors name parameters as a Python caller writes them ("Cs='x' is not ...", "pass
drop_empty=True") and say which they name (:attr:`bertprobe.core.errors.BertprobeError.params`);
the CLI user knows flags. :data:`WORDS` is the one table from one to the other: every parameter
an error may name has an entry, its flag or ``None`` for a parameter no command sets (its
message then keeps the Python spelling). A test checks that every parameter a raise names is in
it and that every flag in it is one the CLI has.
"""

from __future__ import annotations

from bertprobe.core.errors import BertprobeError, Message

WORDS: dict[str, str | None] = {
    # flags of the commands, by the library parameter they set
    "Cs": "--c-grid",
    "cv": "--cv",
    "n_jobs": "--jobs",
    "poolings": "--poolings",
    "encoder": "--encoder",
    "encoders": "--encoders",
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
    "batch_rows": "--chunk-size",
    "actors": "--actors",
    "cpus_per_actor": "--actor-cpus",
    "label_col": "--label-col",
    "label_cols": "--label-cols",
    "label_sep": "--label-sep",
    "train": "--train",
    "epochs": "--epochs",
    "lr": "--lr",
    "seed": "--seed",
    "dev": "--dev",
    "dev_share": "--dev-share",
    "features": "--features",
    "finalists": "--finalists",
    "class_weight": "--class-weight",
    "metric": "--metric",
    "threshold": "--threshold",
    "method": "--method",
    "occlude": "--occlude",
    "steps": "--steps",
    "n": "--n",
    "strategy": "--strategy",
    "labels": "--labels",
    "labelled": "--labelled",
    "unlabelled": "--unlabelled",
    "pairs_per_text": "--pairs-per-text",
    "out": "--out",
    "replicas": "--replicas",
    "workers": "--workers",
    "num_cpus": "--replica-cpus",
    "num_gpus": "--replica-gpus",
    "autoscaling": "--autoscale",
    "max_texts": "--max-texts",
    "max_chars": "--max-chars",
    "max_body_bytes": "--max-body-bytes",
    "max_queue": "--max-queue",
    "max_queue_tokens": "--max-queue-tokens",
    "latency_budget_s": "--latency-budget",
    "request_timeout_s": "--request-timeout",
    "zero_shot": "--zero-shot",
    "descriptions": "--zero-shot",
    "template": "--template",
    "rounds": "--rounds",
    "per_class": "--per-class",
    "teacher": "--distill",
    "augment": "--augment",
    "temperature": "--temperature",
    "patience": "--patience",
    "track": "--track",
    "register": "--register",
    "alias": "--alias",
    # switches, as a Python caller sets them
    "drop_empty=True": "--drop-empty",
    "use_cache=False": "--no-cache",
    "auto=True": "--auto",
    "out_of_core=True": "--out-of-core",
    "multi_label=True": "--multi-label",
    "tune_thresholds=True": "--tune-thresholds",
    "use_pool_labels=True": "--use-pool-labels",
    # parameters of the library no command sets: their messages keep the Python spelling
    "classes": None,
    "texts": None,
    "head": None,
    "rule": None,
    "loss": None,
    "warmup": None,
    "weight_decay": None,
    "min_steps": None,
    "min_pairs": None,
    "max_pairs": None,
    "ranking": None,
    "pseudo_labels": None,
    "model_threads": None,
    "max_ongoing_requests": None,
    "surge_percent": None,
    "multi_class": None,
    "max_drain_bytes": None,
    "label_vectors": None,
    "gold_weight": None,
    "teacher_backend": None,
    "p_mask": None,
    "p_replace": None,
    "model": None,
    "path": None,
}

# Characters that end a line somewhere (str.splitlines): a path or value holding one is shown
# escaped, so the error stays one line whatever the user typed.
_LINE_BREAKS = {ord(c): repr(c)[1:-1] for c in "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"}


def in_cli_words(said: BertprobeError | Message | str) -> str:
    """What the library said, with the parameters it names as the CLI's flags (:data:`WORDS`).

    Examples
    --------
    >>> in_cli_words(Message("pass drop_empty=True, or a smaller max_length=",
    ...                      param=("drop_empty=True", "max_length")))
    'pass --drop-empty, or a smaller --max-length'
    """
    if isinstance(said, BertprobeError | Message):
        return said.in_words(WORDS)
    return str(said)


def one_line(message: str) -> str:
    r"""``message`` with its line breaks escaped.

    Examples
    --------
    >>> one_line("no such file: a\nb.tsv")
    'no such file: a\\nb.tsv'
    """
    return message.translate(_LINE_BREAKS)
