"""Reference vs fast path for every kernel operation, side by side in one run.

    python benchmarks/kernels.py [--device cpu|cuda] [--quick] [--json] [--ops NAME]
                                 [--out benchmarks/results] [--from-json STORED.json]

Each row: the operation at one shape, the plain reference (``mmllm.reduction``) and the fast path
the reducers use by default (Triton on CUDA, vectorised torch/NumPy on CPU), wall times
(minimum, median beside it; reference and fast path timed in alternating rounds), the speed-up,
on CUDA also the vectorised torch path (``torch_ms``: what ``MMLLM_KERNELS=torch`` runs there),
the bytes and float32 FLOPs the fast path must at least move and do, the bandwidth that implies,
and the floor (the larger of bytes / peak bandwidth and FLOPs / peak float32 rate) so the gap to
the physical limit is visible. Peaks: the device's datasheet figures on known GPUs, else a
measured large copy and matrix product.
Shapes too slow for a CPU (the product B*N*N*D above a cap) are listed as skipped. A case that
raises is recorded with its error and the run goes on (one broken kernel must not cost the
other rows of a scarce GPU run); with ``--out`` the JSON is rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from mmllm.kernels import ops
from mmllm.kernels.dispatch import use
from mmllm.reduction import VisualTokens
from mmllm.reduction.divprune import divprune_select
from mmllm.reduction.dpp import dpp_greedy_map
from mmllm.reduction.tome import bipartite_match, merge_tokens

FULL = {"B": (1, 8, 32), "N": (196, 576, 2880), "D": (768, 1024, 4096)}
QUICK = {"B": (1, 8), "N": (196, 576), "D": (1024,)}
CPU_CAP = 2e11  # B*N*N*D beyond this takes minutes per call on a few cores: skipped
DATASHEET_GBPS = {"H200": 4800.0, "H100": 3350.0, "A100": 2039.0, "L40S": 864.0}
# plain float32 (no tensor cores): what a float32-exact reference's matrix products run at
DATASHEET_FP32_TFLOPS = {"H200": 67.0, "H100": 67.0, "A100": 19.5, "L40S": 91.6}


def work(op: str, b: int, n: int, d: int) -> tuple[int, float]:
    """Bytes the fast path must at least move and float32 FLOPs it must at least do for one
    case of :func:`cases` (same K = N / 9, r = N / 4, 64-wide heads)."""
    k, r, heads, hd = max(1, n // 9), n // 4, max(1, d // 64), 64
    if op.startswith("divprune"):  # features in, N x N distances out and read back; the GEMM
        return 4 * (b * n * d + 2 * b * n * n), 2.0 * b * n * n * d
    if op.startswith("tome (match"):  # features read twice, M rows written; the Na x Nb GEMM
        return 4 * (2 * b * n * d + b * (n - r) * d), 2.0 * b * ((n + 1) // 2) * (n // 2) * d
    if op.startswith("tome merge"):  # each row read once, M rows written
        return 4 * (b * n * d + b * (n - r) * d), 2.0 * b * n * d
    if op.startswith("score"):  # the keys once, K rows gathered and written
        return 4 * (b * heads * n * hd + b * k * d * 2), 2.0 * b * heads * n * hd
    if op.startswith("dpp"):  # the kernel matrix once, the Cholesky rows; K^2 N / 2 updates x2
        return 4 * (b * n * n + b * k * n), 1.0 * b * k * k * n
    raise ValueError(f"no work model for {op!r}")


def derive(row: dict, gbps: float, tflops: float | None) -> dict:
    """The floor columns of a timed row: bytes / peak bandwidth and, where the peak float32
    rate is known, FLOPs / peak rate; the floor is the larger, named by what bounds it."""
    nbytes, flops = work(row["op"], row["B"], row["N"], row["D"])
    mem_ms = nbytes / (gbps * 1e9) * 1000
    compute_ms = flops / (tflops * 1e12) * 1000 if tflops else 0.0
    floor_ms = max(mem_ms, compute_ms)
    row.update({
        "MB_moved": round(nbytes / 1e6, 2), "GFLOP": round(flops / 1e9, 3),
        "fast_GBps": round(nbytes / (row["fast_ms"] / 1000) / 1e9, 1),
        "mem_floor_ms": round(mem_ms, 4), "compute_floor_ms": round(compute_ms, 4),
        "floor_ms": round(floor_ms, 4), "bound": "compute" if compute_ms > mem_ms else "memory",
        "x_floor": round(row["fast_ms"] / floor_ms, 1),
    })  # fmt: skip
    return row


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device, min_s: float = 0.3) -> float:
    """Minimum milliseconds of ``fn`` over repeated calls after a warm-up."""
    return timed_rounds([fn], device, min_s)[0]["min"]


def timed_rounds(
    fns: list[Callable[[], object]], device: torch.device, min_s: float = 1.0
) -> list[dict[str, float]]:
    """Minimum and median milliseconds of each of ``fns``, timed in alternating rounds of 3
    calls each (after a warm-up), so drift of a shared machine hits every side alike; at least
    3 rounds, more while under ``min_s``."""
    for fn in fns:
        fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    start = time.perf_counter()
    while len(times[0]) < 9 or (time.perf_counter() - start < min_s and len(times[0]) < 150):
        for fn, out in zip(fns, times, strict=True):
            for _ in range(3):
                t = time.perf_counter()
                fn()
                sync(device)
                out.append(time.perf_counter() - t)
    return [{"min": 1000 * min(t), "median": 1000 * statistics.median(t)} for t in times]


def with_backend(choice: str, fn: Callable[[], object]) -> Callable[[], object]:
    def call():
        with use(choice):
            return fn()

    return call


def datasheet(table: dict[str, float], device: torch.device) -> tuple[float, str] | None:
    """The figure ``table`` gives for this GPU (matched by name), or None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    value = next((v for key, v in table.items() if key in name), None)
    return None if value is None else (value, f"datasheet ({name})")


def peak_gbps(device: torch.device) -> tuple[float, str]:
    if known := datasheet(DATASHEET_GBPS, device):
        return known
    x = torch.empty(64 * 2**20, dtype=torch.float32, device=device)  # 256 MB
    y = torch.empty_like(x)
    ms = timed(lambda: y.copy_(x), device)
    return 2 * x.numel() * 4 / (ms / 1000) / 1e9, "measured copy"


def cases(b: int, n: int, d: int, device: torch.device):
    """``(op, reference fn, fast fn)`` for one shape (:func:`work` gives each one's floor)."""
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(b, n, d, generator=g).to(device)
    k_keep = max(1, n // 9)  # ~11% of the tokens
    yield ("divprune (cosine + greedy max-min)", lambda: divprune_select(x, k_keep),
           lambda: ops.cosine_max_min(x, k_keep))  # fmt: skip

    tokens = VisualTokens(embeds=x, size=torch.ones(b, n, dtype=torch.long, device=device))
    r = n // 4

    def ref_tome():
        return merge_tokens(tokens, *bipartite_match(x, r))

    yield ("tome (match + merge)", ref_tome, lambda: ops.bipartite_merge(tokens, r, x))
    src, dst = bipartite_match(x, r)
    yield ("tome merge (given the match)", lambda: merge_tokens(tokens, src, dst),
           lambda: ops.merge(tokens, src, dst))  # fmt: skip

    heads, hd = max(1, d // 64), 64
    q = torch.randn(b, heads, hd, generator=g).to(device)
    keys = torch.randn(b, heads, n, hd, generator=g).to(device)

    def ref_score():
        s = ops.query_attention_reference(q, keys, hd**-0.5)
        idx = s.topk(k_keep, dim=1).indices.sort(dim=1).values
        return x.gather(1, idx[..., None].expand(-1, -1, d))

    yield ("score + top-k + gather", ref_score, lambda: ops.query_topk(q, keys, k_keep, x))

    unit = F.normalize(x, dim=-1)
    kernel = unit @ unit.transpose(1, 2)
    yield ("dpp greedy MAP", lambda: dpp_greedy_map(kernel, k_keep),
           lambda: ops.dpp_greedy_map(kernel, k_keep))  # fmt: skip


def measure(ref, fast, device: torch.device, min_s: float | None = None) -> dict:
    """One row's times: reference vs the default fast path (and, on CUDA, the torch path)."""
    fns = [ref, fast] + ([with_backend("torch", fast)] if device.type == "cuda" else [])
    if min_s is None:
        min_s = 1.0 if device.type == "cpu" else 0.4
    timings = timed_rounds(fns, device, min_s)
    ref_t, fast_t = timings[0], timings[1]
    row = {
        "ref_ms": round(ref_t["min"], 4), "fast_ms": round(fast_t["min"], 4),
        "speedup": round(ref_t["min"] / fast_t["min"], 2),
        "ref_median_ms": round(ref_t["median"], 4),
        "fast_median_ms": round(fast_t["median"], 4),
        "speedup_median": round(ref_t["median"] / fast_t["median"], 2),
    }  # fmt: skip
    if len(timings) > 2:
        row["torch_ms"] = round(timings[2]["min"], 4)
    return row


def peak_tflops(device: torch.device) -> tuple[float, str]:
    """Peak float32 rate: the datasheet's non-tensor-core figure on known GPUs, else a measured
    large matrix product."""
    if known := datasheet(DATASHEET_FP32_TFLOPS, device):
        return known
    a = torch.randn(2048, 2048, device=device)
    ms = timed(lambda: a @ a, device)
    return 2 * 2048**3 / (ms / 1000) / 1e12, "measured 2048^3 matmul"


def run(
    device: torch.device,
    grid: dict,
    progress: bool,
    on_row: Callable | None = None,
    only: str = "",
    min_s: float | None = None,
) -> tuple[list[dict], dict]:
    gbps, source = peak_gbps(device)
    tflops, flops_source = peak_tflops(device)
    gbps, tflops = round(gbps, 1), round(tflops, 2)  # as stored: re-renders derive the same
    meta = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)",
        "peak_GBps": gbps,
        "peak_source": source,
        "peak_fp32_TFLOPs": tflops,
        "peak_fp32_source": flops_source,
        "fast_backend": ops.backend("bench", device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }  # fmt: skip
    rows = []
    for b in grid["B"]:
        for n in grid["N"]:
            for d in grid["D"]:
                if device.type == "cpu" and b * n * n * d > CPU_CAP:
                    rows.append({"op": "*", "B": b, "N": n, "D": d, "skipped": "CPU time"})
                    continue
                for op, ref, fast in cases(b, n, d, device):
                    if only not in op:
                        continue
                    row = {"op": op, "B": b, "N": n, "D": d}
                    try:
                        row = derive(row | measure(ref, fast, device, min_s), gbps, tflops)
                    except Exception as err:  # recorded, not hidden: the row says what broke
                        row["error"] = f"{type(err).__name__}: {err}"[:500]
                        traceback.print_exc()
                    rows.append(row)
                    if progress:
                        print(json.dumps(row), flush=True)
                    if on_row is not None:
                        on_row(rows, meta)
    return rows, meta


def markdown(rows: list[dict], meta: dict, command: str) -> str:
    torch_col = any("torch_ms" in r for r in rows)
    extra_head, extra_rule = (" torch ms |", "---|") if torch_col else ("", "")
    flops_note = (
        f", peak float32 {meta['peak_fp32_TFLOPs']} TFLOP/s ({meta['peak_fp32_source']})"
        if meta.get("peak_fp32_TFLOPs")
        else ""
    )
    lines = [
        f"# Kernels: reference vs fast path on {meta['device']}",
        "",
        f"Command: `{command}`; fast backend: {meta['fast_backend']}; torch {meta['torch']}; "
        f"{meta['threads']} torch threads; peak bandwidth {meta['peak_GBps']} GB/s "
        f"({meta['peak_source']}){flops_note}. Times: minimum over repeated calls (speed-up of "
        "the medians beside it)."
        + (" torch ms: the vectorised torch path on the same device." if torch_col else "")
        + " Floor: the larger of bytes moved / peak bandwidth and FLOPs / peak float32 rate"
        " (the bound named beside it); x floor: fast ms over it.",
        "",
        "| op | B | N | D | ref ms | fast ms | speed-up | (medians) |"
        + extra_head
        + " MB moved | GFLOP | fast GB/s | floor ms | bound | x floor |",
        "|---|---|---|---|---|---|---|---|" + extra_rule + "---|---|---|---|---|---|",
    ]
    blank = " |" * (11 if torch_col else 10)
    for r in rows:
        shape = f"| {r['B']} | {r['N']} | {r['D']} |"
        if "skipped" in r:
            lines.append(f"| (all) {shape} skipped: {r['skipped']} |" + blank[2:])
            continue
        if "error" in r:
            lines.append(f"| {r['op']} {shape} error: {r['error'][:120]} |" + blank[2:])
            continue
        torch_cell = f" {r['torch_ms']} |" if torch_col else ""
        lines.append(
            f"| {r['op']} {shape} {r['ref_ms']} | {r['fast_ms']} "
            f"| {r['speedup']}x | {r['speedup_median']}x |{torch_cell} {r['MB_moved']} "
            f"| {r['GFLOP']} | {r['fast_GBps']} | {r['floor_ms']} | {r['bound']} "
            f"| {r['x_floor']} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], meta: dict, path: Path) -> None:
    """Speed-up over the reference per operation (one panel each) against the shape, log scale,
    with 1x (break-even) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    measured = [r for r in rows if "speedup" in r]
    ops_seen = list(dict.fromkeys(r["op"] for r in measured))
    if not ops_seen:
        return
    fig, axes = plt.subplots(len(ops_seen), 1, figsize=(11, 2.3 * len(ops_seen)), squeeze=False)
    for ax, op in zip(axes[:, 0], ops_seen, strict=True):
        mine = [r for r in measured if r["op"] == op]
        labels = [f"{r['B']}x{r['N']}x{r['D']}" for r in mine]
        bars = ax.bar(range(len(mine)), [r["speedup"] for r in mine], color="tab:blue")
        ax.bar_label(bars, fmt="%.1f", fontsize=6)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylabel("speed-up")
        ax.set_title(op, fontsize=10, loc="left")
        ax.set_xticks(range(len(mine)), labels, rotation=60, fontsize=7)
    fig.suptitle(f"fast path over reference on {meta['device']} (B x N x D)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(out: Path, device: str, rows: list[dict], meta: dict, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"kernels_{device}"
    stem.with_suffix(".md").write_text(markdown(rows, meta, command))
    stem.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "command": command, "rows": rows}, indent=2)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="a small subset (a minute or two)")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON list")
    parser.add_argument("--out", type=Path, default=None, help="write kernels_<device>.md/json")
    parser.add_argument("--ops", default="", help="only operations whose name contains this")
    parser.add_argument(
        "--from-json", type=Path, default=None,
        help="measure nothing: re-render a stored kernels_<device>.json (md + png) into --out",
    )  # fmt: skip
    args = parser.parse_args()
    if args.from_json is not None:
        stored = json.loads(args.from_json.read_text())
        device_type = args.from_json.stem.removeprefix("kernels_")
        out = args.out or args.from_json.parent
        write(out, device_type, stored["rows"], stored["meta"], stored["command"])
        plot(stored["rows"], stored["meta"], out / f"kernels_{device_type}.png")
        return
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    torch.set_grad_enabled(False)
    command = (
        "python benchmarks/kernels.py --device " + args.device + (" --quick" if args.quick else "")
    ) + (f" --ops '{args.ops}'" if args.ops else "")

    def on_row(rows: list[dict], meta: dict) -> None:
        if args.out is not None:
            write(args.out, device.type, rows, meta, command)

    rows, meta = run(device, QUICK if args.quick else FULL, not args.json, on_row, args.ops)
    if args.json:
        print(json.dumps(rows))
    else:
        print(markdown(rows, meta, command))
    if args.out is not None:
        write(args.out, device.type, rows, meta, command)
        plot(rows, meta, args.out / f"kernels_{device.type}.png")


if __name__ == "__main__":
    main()
