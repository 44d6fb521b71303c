"""ONNX exports of an encoder, built once and kept in the cache folder by fingerprint.

``onnx`` is the encoder exported from torch (fp32; same vectors as torch to about 1e-5);
``onnx-int8`` is that graph with its weights dynamically quantized to int8 per channel by ONNX
Runtime's quantizer (faster on CPUs with VNNI; vectors within a few percent of fp32). Both
return every hidden state, so any layer and pooling can be taken from one run.
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bertprobe.core.extras import needs_extra, require_extra

OPSET = 17


def onnx_path(model, backend: str, cache_dir: str | Path | None = None) -> Path:
    """The ONNX file for a loaded torch encoder and backend, exported on first use."""
    from bertprobe.encoders.cache import default_cache_dir

    require_extra("onnx")  # before an export that would be wasted
    folder = Path(cache_dir or default_cache_dir()) / "onnx" / model.ref.fingerprint[7:31]
    fp32 = folder / "model.onnx"
    if not fp32.is_file():
        _atomic(fp32, lambda tmp: _export(model, tmp))
    if backend == "onnx":
        return fp32
    int8 = folder / "model.int8.onnx"
    if not int8.is_file():
        _atomic(int8, lambda tmp: _quantize(fp32, tmp))
    return int8


def _atomic(target: Path, build) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=target.parent)
    os.close(fd)
    try:
        build(Path(tmp))
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _export(model, target: Path) -> None:
    import torch

    class AllHiddenStates(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            out = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True
            )
            return torch.stack(out.hidden_states)

    sample = model.tokenizer(
        ["an example", "a longer example sentence"], padding=True, return_tensors="pt"
    )
    dynamic = {"batch": 0, "seq": 1}
    with warnings.catch_warnings():
        # The tracer notes Python-side branches on shapes; for encoder inputs (a mask as long as
        # the ids) they are constant. Padding invariance of the export is tested.
        warnings.simplefilter("ignore")
        _trace_export(AllHiddenStates(model.model).eval(), sample, dynamic, target)


def _trace_export(module, sample, dynamic, target: Path, output: str = "hidden_states") -> None:
    import torch

    # All hidden states are [layer, batch, seq, dim]; a classifier's probabilities [batch, class].
    output_axes = {1: "batch", 2: "seq"} if output == "hidden_states" else {0: "batch"}
    torch.onnx.export(
        module,
        (sample["input_ids"], sample["attention_mask"]),
        str(target),
        input_names=["input_ids", "attention_mask"],
        output_names=[output],
        dynamic_axes={
            "input_ids": {v: k for k, v in dynamic.items()},
            "attention_mask": {v: k for k, v in dynamic.items()},
            output: output_axes,
        },
        opset_version=OPSET,
        dynamo=False,
    )


def _quantize(source: Path, target: Path, only_under: str | None = None) -> None:
    """Weights to int8 per channel; with ``only_under``, only in nodes named under that module
    path (a classifier's encoder: its few head weights gain nothing from int8 and keep fp32)."""
    with needs_extra("onnx"):
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

    exclude = []
    if only_under is not None:
        nodes = onnx.load(str(source), load_external_data=False).graph.node
        exclude = [node.name for node in nodes if not node.name.startswith(only_under)]
    with quiet_onnxruntime():  # the quantizer's advice on pre-processing, meant for images
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_exclude=exclude,
        )


@contextmanager
def quiet_onnxruntime() -> Iterator[None]:
    """Drop onnxruntime's log records below ERROR during the block, and nobody else's.

    Its quantizer logs through the root logger (``logging.warning(...)``), not a logger of its
    own, so its records are told apart by the file they come from; records of onnxruntime's
    named loggers are held back by their level. Everything is as before afterwards, including
    the stderr handler that ``logging.warning`` installs on a root logger that has none.
    """
    with needs_extra("onnx"):
        import onnxruntime

    package = os.path.dirname(os.path.abspath(onnxruntime.__file__)) + os.sep
    root, named = logging.getLogger(), logging.getLogger("onnxruntime")
    handlers, root_level, named_level = list(root.handlers), root.level, named.level

    def not_onnxruntime(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or not record.pathname.startswith(package)

    root.addFilter(not_onnxruntime)
    named.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.removeFilter(not_onnxruntime)
        named.setLevel(named_level)
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(root_level)


def onnx_session(path: Path, threads: int | None = None):
    with needs_extra("onnx"):
        import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
