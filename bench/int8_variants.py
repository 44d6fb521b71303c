"""The int8 encoder's quantization choices, each measured on and off against the one shipped.

The bundled encoder (all-MiniLM-L6-v2) exported to ONNX as the `onnx` backend does, then:

- shipped: `quantize_dynamic`, int8 weights per channel (the `onnx-int8` backend);
- per-tensor: the same with one scale per weight tensor;
- reduce-range: the shipped one with 7-bit weights (for CPUs without VNNI);
- fused + shipped: ONNX Runtime's transformer optimizer first (fused attention, skip layer
  norm, bias GELU), then the shipped quantization;
- static QDQ / static QOperator: `quantize_static`, activations' scales calibrated once on 512
  SST-2 training sentences (no quantize step at run time).

Each runs the SST-2 test split (1,821 sentences) in length-sorted batches of 32 on the same
session settings, best of three passes, interleaved so load affects all alike; the vectors
(last layer, mean pooled) are compared with fp32's by cosine similarity. Prints a table;
writes bench/results/int8_variants.json.

    .venv/bin/python bench/int8_variants.py [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def batches_of(tokenizer, texts: list[str], size: int = 32) -> list[dict[str, np.ndarray]]:
    order = np.argsort([len(t) for t in texts])
    found = []
    for i in range(0, len(texts), size):
        chunk = [texts[j] for j in order[i : i + size]]
        encoded = tokenizer(chunk, padding=True, truncation=True, return_tensors="np")
        found.append({k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask")})
    return found


def build_variants(fp32: Path, shipped: Path, calibration: list, work: Path) -> dict[str, Path]:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers import optimizer

    from bertprobe.encoders.onnx import quiet_onnxruntime

    # The optimizer's fused operators have no ONNX type inference: say what their outputs hold.
    typed = {"DefaultTensorType": 1}
    variants = {"shipped": shipped}
    fused = work / "fused.onnx"
    optimizer.optimize_model(
        str(fp32), model_type="bert", num_heads=12, hidden_size=384
    ).save_model_to_file(str(fused))
    dynamic = {
        "per-tensor": (fp32, dict(per_channel=False)),
        "reduce-range": (fp32, dict(per_channel=True, reduce_range=True)),
        "fused + shipped": (fused, dict(per_channel=True)),
    }

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration)

        def get_next(self):
            return next(self.batches, None)

    prepared = work / "prepared.onnx"
    with quiet_onnxruntime():
        for name, (source, options) in dynamic.items():
            variants[name] = work / f"{name}.onnx"
            quantize_dynamic(
                str(source),
                str(variants[name]),
                weight_type=QuantType.QInt8,
                extra_options=typed,
                **options,
            )
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        for name, fmt, activations in (
            ("static QDQ", QuantFormat.QDQ, QuantType.QInt8),
            ("static QOperator", QuantFormat.QOperator, QuantType.QUInt8),
        ):
            variants[name] = work / f"{name}.onnx"
            quantize_static(
                str(prepared),
                str(variants[name]),
                Calibration(),
                quant_format=fmt,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=activations,
                op_types_to_quantize=["MatMul"],
                extra_options=typed,
            )
    return variants


def mean_pooled(outputs: list[np.ndarray], batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    rows = []
    for hidden, batch in zip(outputs, batches, strict=True):
        mask = batch["attention_mask"][..., None]
        rows.append((hidden[-1] * mask).sum(axis=1) / mask.sum(axis=1))
    return np.concatenate(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import onnxruntime as ort

    from bertprobe.datasets import load_sst2
    from bertprobe.encoders.encoder import load_encoder
    from bertprobe.encoders.onnx import onnx_path

    load = os.getloadavg()[0]
    encoder = load_encoder("minilm")
    fp32, shipped = onnx_path(encoder, "onnx"), onnx_path(encoder, "onnx-int8")
    test = batches_of(encoder.tokenizer, load_sst2("test").texts)
    calibration = batches_of(encoder.tokenizer, load_sst2("train").texts[:512])
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": fp32, **build_variants(fp32, shipped, calibration, Path(tmp))}
        sessions = {n: ort.InferenceSession(str(p), options) for n, p in paths.items()}
        seconds: dict[str, list[float]] = {n: [] for n in sessions}
        outputs: dict[str, list[np.ndarray]] = {}
        for _ in range(args.repeats):
            for name, session in sessions.items():
                start = time.perf_counter()
                outputs[name] = [session.run(None, batch)[0] for batch in test]
                seconds[name].append(time.perf_counter() - start)
    reference = mean_pooled(outputs["fp32"], test)
    n_texts = sum(len(b["input_ids"]) for b in test)
    rows = []
    for name in sessions:
        vectors = mean_pooled(outputs[name], test)
        cosine = (vectors * reference).sum(axis=1) / (
            np.linalg.norm(vectors, axis=1) * np.linalg.norm(reference, axis=1)
        )
        rows.append(
            {
                "variant": name,
                "sentences_per_s": n_texts / min(seconds[name]),
                "cosine_min": float(cosine.min()),
                "cosine_mean": float(cosine.mean()),
            }
        )
    print(f"SST-2 test, {n_texts:,} sentences, {args.threads} threads, load average {load:.1f}")
    print("| variant | sentences/s | cosine to fp32, min | mean |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['sentences_per_s']:.0f} | {r['cosine_min']:.4f} | "
            f"{r['cosine_mean']:.5f} |"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "load_average_at_start": load,
        "threads": args.threads,
        "rows": rows,
    }
    (RESULTS / "int8_variants.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
