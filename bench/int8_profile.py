"""Where the onnx-int8 encoder spends its time, against what this CPU's GEMMs allow.

Two measurements in one run, on the bundled encoder (all-MiniLM-L6-v2) and the SST-2 test split:

1. The GEMM ceiling: ONNX Runtime's own int8 ``MatMulInteger`` and fp32 ``MatMul`` on the
   encoder's largest product (4096 x 384 @ 384 x 1536, the feed-forward layer of a batch of
   4,096 tokens), with the threads the encoder gets. GOP/s over the MatMul work of one token
   (2 x the weights of the six layers' projections, about 21 MOP) and the split's mean tokens a
   sentence give the sentences/s the products alone would allow.
2. The encoder as ``embed`` runs it: length-sorted batches, the tokenizer, ``session.run`` with
   ONNX Runtime's profiler on, the pooling. Time by stage (Python side) and by operator type
   (inside the graph, from the profiler's trace), as shares of the whole.

Prints markdown tables; writes bench/results/int8_profile.json.

    .venv/bin/python bench/int8_profile.py [--batch-size 32] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
M, K, N = 4096, 384, 1536


def gemm_ceiling(threads: int, repeats: int = 20) -> dict[str, float]:
    """GOP/s of ONNX Runtime's int8 MatMulInteger and fp32 MatMul on an M x K @ K x N product."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = {
        "int8": numpy_helper.from_array(rng.integers(-127, 128, (K, N), dtype=np.int8), "B"),
        "fp32": numpy_helper.from_array(rng.standard_normal((K, N)).astype(np.float32), "B"),
    }
    inputs = {
        "int8": rng.integers(0, 256, (M, K), dtype=np.uint8),
        "fp32": rng.standard_normal((M, K)).astype(np.float32),
    }
    rates = {}
    for kind in ("int8", "fp32"):
        a_type = TensorProto.UINT8 if kind == "int8" else TensorProto.FLOAT
        y_type = TensorProto.INT32 if kind == "int8" else TensorProto.FLOAT
        node = helper.make_node("MatMulInteger" if kind == "int8" else "MatMul", ["A", "B"], ["Y"])
        graph = helper.make_graph(
            [node],
            "gemm",
            [helper.make_tensor_value_info("A", a_type, [M, K])],
            [helper.make_tensor_value_info("Y", y_type, [M, N])],
            [weights[kind]],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        onnx.checker.check_model(model)
        for _ in range(3):  # warm-up: packing of the weights, thread pool start
            session.run(None, {"A": inputs[kind]})
        start = time.perf_counter()
        for _ in range(repeats):
            session.run(None, {"A": inputs[kind]})
        seconds = (time.perf_counter() - start) / repeats
        rates[kind] = 2 * M * K * N / seconds / 1e9
    return rates


def matmul_ops_per_token(hidden: int, intermediate: int, layers: int) -> int:
    """Multiply-adds x 2 of one token through the projections (Q, K, V, output, two FFN)."""
    return 2 * layers * (4 * hidden * hidden + 2 * hidden * intermediate)


def profile_encoder(batch_size: int, threads: int, repeats: int) -> dict:
    import onnxruntime as ort
    import torch

    from bertprobe.datasets import load_sst2
    from bertprobe.encoders.encoder import load_encoder
    from bertprobe.encoders.onnx import onnx_path
    from bertprobe.encoders.pooling import pool_tokens_numpy

    torch.set_num_threads(threads)
    texts = load_sst2("test").texts
    encoder = load_encoder("minilm", backend="onnx-int8")
    config = encoder.model.config
    per_token = matmul_ops_per_token(
        config.hidden_size, config.intermediate_size, config.num_hidden_layers
    )
    ids, _ = encoder.tokenize(texts, encoder.max_length)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    batches = [
        [ids[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)
    ]
    tokens = sum(len(x) for x in ids)
    padded = sum(len(b) * max(len(x) for x in b) for b in batches)

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(tmp, "ort")
        path = onnx_path(encoder, "onnx-int8")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        stages: dict[str, float] = defaultdict(float)
        walls = []
        for _ in range(repeats):
            start = time.perf_counter()
            t = time.perf_counter()
            encoder.tokenize(texts, encoder.max_length)
            stages["tokenize"] += time.perf_counter() - t
            for batch in batches:
                t = time.perf_counter()
                padded_batch = encoder.tokenizer.pad({"input_ids": batch}, return_tensors="np")
                stages["pad"] += time.perf_counter() - t
                t = time.perf_counter()
                (states,) = session.run(
                    None,
                    {
                        "input_ids": padded_batch["input_ids"].astype(np.int64),
                        "attention_mask": padded_batch["attention_mask"].astype(np.int64),
                    },
                )
                stages["session.run"] += time.perf_counter() - t
                t = time.perf_counter()
                pool_tokens_numpy(
                    states[-1], padded_batch["attention_mask"], "mean"
                )  # as embed does
                stages["pool"] += time.perf_counter() - t
            walls.append(time.perf_counter() - start)
        trace = json.loads(Path(session.end_profiling()).read_text())
    by_op: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"] / 1e6
    wall = min(walls)
    return {
        "sentences": len(texts),
        "tokens": tokens,
        "mean_tokens": tokens / len(texts),
        "padding_share": 1 - tokens / padded,
        "batch_size": batch_size,
        "threads": threads,
        "matmul_ops_per_token": per_token,
        "seconds": wall,
        "sentences_per_s": len(texts) / wall,
        "stages_s": {k: v / repeats for k, v in stages.items()},
        "ops_s": {k: v / repeats for k, v in sorted(by_op.items(), key=lambda kv: -kv[1])},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    ceiling = gemm_ceiling(args.threads)
    found = profile_encoder(args.batch_size, args.threads, args.repeats)
    per_sentence = found["matmul_ops_per_token"] * found["mean_tokens"]
    ceilings = {kind: gops * 1e9 / per_sentence for kind, gops in ceiling.items()}

    print(f"GEMM ceiling, {M}x{K} @ {K}x{N}, {args.threads} threads")
    print("| kind | GOP/s | sentences/s the products allow |")
    print("| --- | --- | --- |")
    for kind, gops in ceiling.items():
        print(f"| {kind} | {gops:.0f} | {ceilings[kind]:,.0f} |")
    rate = found["sentences_per_s"]
    print(
        f"\nonnx-int8 encoder: {rate:,.0f} sentences/s on SST-2 test ({found['sentences']:,} "
        f"sentences, {found['mean_tokens']:.1f} tokens each, {100 * found['padding_share']:.1f}% "
        f"padding in batches of {args.batch_size}): {100 * rate / ceilings['int8']:.0f}% of the "
        "int8 GEMM ceiling"
    )
    total = sum(found["stages_s"].values())
    print("\n| stage | seconds | share |\n| --- | --- | --- |")
    for stage, seconds in found["stages_s"].items():
        print(f"| {stage} | {seconds:.3f} | {100 * seconds / total:.1f}% |")
    inside = sum(found["ops_s"].values())
    print("\n| operator (inside session.run) | seconds | share |\n| --- | --- | --- |")
    for op, seconds in list(found["ops_s"].items())[:12]:
        print(f"| {op} | {seconds:.3f} | {100 * seconds / inside:.1f}% |")

    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "gemm_gops": ceiling,
        "ceiling_sentences_per_s": ceilings,
        **found,
    }
    (RESULTS / "int8_profile.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
