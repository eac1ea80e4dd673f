"""Held-out accuracy through the vLLM server for each quantization preset, and agreement of the
served greedy answers with local `mmllm chat` (fp32, same reduction).

    python benchmarks/serve_accuracy.py --data data/test --limit 200 --out benchmarks/results

Local answers are computed once; then one server per preset (none, fp8 online, w8a8 calibrated
and w8a8-dynamic exports) is started, asked every question, and stopped. Writes
serve_accuracy.md and serve_accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from mmllm.data.dataset import load_dataset
from mmllm.default_model import load_model
from mmllm.serving.bench import ServerProcess
from mmllm.serving.compare import local_answers, served_agreement
from mmllm.serving.export import calibration_samples, export_for_vllm
from mmllm.serving.quantization import get_preset
from mmllm.serving.server import served_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=200)
    parser.add_argument("--reduction", default=None, help="Served and local reduction.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument(
        "--presets", default=None, help="Comma-separated subset (rows of other presets are kept)."
    )
    args = parser.parse_args()

    samples = load_dataset(args.data)[: args.limit]
    model = load_model(reduction=args.reduction)
    local = local_answers(samples, model, args.max_new_tokens)
    work = Path(tempfile.mkdtemp(prefix="mmllm-serve-acc-"))
    plain = served_folder(None)
    wanted = set(args.presets.split(",")) if args.presets else None

    def exported(name: str, **kw) -> Path:
        if wanted is not None and name not in wanted:
            return plain  # not run
        return export_for_vllm(None, work / name, **kw)

    static = exported("w8a8", quantize="w8a8", calibration=calibration_samples())
    dynamic = exported("w8a8-dynamic", quantize="w8a8-dynamic")
    presets = {"none": (plain, []), "fp8": (plain, ["--quantization", "fp8"]),
               "w8a8": (static, ["--quantization", "w8a8"]),
               "w8a8-dynamic": (dynamic, ["--quantization", "w8a8-dynamic"])}  # fmt: skip
    presets = {k: v for k, v in presets.items() if wanted is None or k in wanted}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for name in [k for k in presets if k != "none" and device not in get_preset(k).devices]:
        why = get_preset(name).why_not.get(device, f"not offered on {device}")
        print(f"skipping {name}: {why}")
        del presets[name]
    result_file = args.out / "serve_accuracy.json"
    previous = json.loads(result_file.read_text()) if result_file.is_file() and wanted else []
    rows = [r for r in previous if r["preset"] not in presets]
    for name, (folder, extra) in presets.items():
        log = work / f"{name}.log"
        try:
            with ServerProcess(folder, args.reduction, log, extra) as server:
                result = served_agreement(
                    server.url, samples, max_new_tokens=args.max_new_tokens, local=local
                )
        except Exception as err:  # a preset this machine cannot run is reported, not hidden
            rows.append({"preset": name, "error": f"{type(err).__name__}: {err}", "log": str(log)})
            continue
        summary = result.summary()
        rows.append(
            {
                "preset": name,
                "n": result.n,
                "served_accuracy": summary["served_accuracy"],
                "local_accuracy": summary["local_accuracy"],
                "agreement_with_local": summary["agreement"],
                "mismatches": result.mismatches[:20],
            }
        )
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "mismatches"}), flush=True)
    order = ["none", "fp8", "w8a8", "w8a8-dynamic"]
    rows.sort(key=lambda r: order.index(r["preset"]) if r["preset"] in order else len(order))
    args.out.mkdir(parents=True, exist_ok=True)
    result_file.write_text(json.dumps(rows, indent=2))
    lines = [
        "# Accuracy through the vLLM server, per quantization preset",
        "",
        f"Command: `python benchmarks/serve_accuracy.py --data {args.data} --limit {args.limit}"
        + (f" --reduction {args.reduction}" if args.reduction else "")
        + "`; greedy, exact match, shipped default model.",
        "",
        "Presets: `none` = fp32 as local chat; `fp8` = online fp8 weights (vLLM needs bf16"
        " activations with it); `w8a8` = int8 weights + static int8 activation scales calibrated"
        " on 32 generated training prompts (image + text); `w8a8-dynamic` = per-token scales.",
        "",
        "| preset | n | served accuracy | local (fp32) accuracy | agreement with local |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['preset']} | - | failed: {r['error'][:80]} | | |")
        else:
            lines.append(
                f"| {r['preset']} | {r['n']} | {100 * r['served_accuracy']:.1f}% "
                f"| {100 * r['local_accuracy']:.1f}% | {100 * r['agreement_with_local']:.1f}% |"
            )
    (args.out / "serve_accuracy.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
