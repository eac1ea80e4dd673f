"""The ``mmllm`` command line.

User mistakes end with a one-line ``error: ...`` on stderr and exit code 1 (usage errors: 2);
only bugs show a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from mmllm.errors import MMLLMError

app = typer.Typer(
    name="mmllm",
    help="Visual tokenizers for LLMs, token reduction, recipes and serving.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Generate, list and check data sets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
bench_app = typer.Typer(
    help="Benchmarks (results under benchmarks/results/).", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")
console = Console()


def _tasks_help() -> str:
    from mmllm.data.tasks import TASKS

    lines = ["Tasks (--tasks takes a comma-separated subset):", ""]
    lines += [f"  {t.name}: {t.description}" for t in TASKS.values()]
    return "\n\n".join(lines)


@app.command()
def reducers(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")):
    """List every registered token reducer with its parameters, paper and side information."""
    from mmllm.reduction import describe

    rows = describe()
    if as_json:
        typer.echo(json.dumps(rows, indent=2, default=str))
        return
    table = Table(title="Token reducers (spec: name:value,key=value; chain with +)")
    for col in ("method", "parameters", "example", "paper", "needs"):
        table.add_column(col, overflow="fold")
    for r in rows:
        params = ", ".join(
            f"{p['name']}: {p['type']}"
            + ("" if p["required"] else f" = {p['default']}")
            + (f" ({p['help']})" if p["help"] else "")
            for p in r["params"]
        )
        needs = ", ".join(r["needs"] + (["text"] if r["uses_text"] else [])) or "-"
        table.add_row(
            f"{r['name']}\n[dim]{r['summary']}[/dim]",
            params or "-",
            r["example"],
            r["paper"],
            needs,
        )
    console.print(table)


@data_app.command(
    "make", help="Render a VQA + caption data set in the mmllm data format.\n\n" + _tasks_help()
)
def data_make(
    out: Path = typer.Option(..., "--out", help="Folder to write {split}.jsonl and images/ into."),
    n: int = typer.Option(1000, "--n", min=1, help="Number of samples."),
    seed: int = typer.Option(0, "--seed", help="Seed; same seed, same files."),
    split: str = typer.Option("train", "--split", help="train, val or test (disjoint by content)."),
    tasks: str = typer.Option("", "--tasks", help="Comma-separated task names (default: all)."),
    phrasings: str = typer.Option(
        "",
        "--phrasings",
        help="seen, wide (seen + training-only paraphrases; train split), heldout or all "
        "(default: seen for train, all otherwise).",
    ),
    dense: bool = typer.Option(
        False,
        "--dense",
        help="Shape and colour rows ask about every object of the scene, one turn each "
        "(several answers per image, for training).",
    ),
):
    from mmllm.data.generate import make_dataset

    task_list = [t.strip() for t in tasks.split(",") if t.strip()] or None
    try:
        path = make_dataset(out, n, seed, split, task_list, phrasings or None, dense=dense)
    except ValueError as err:
        raise MMLLMError(str(err)) from None
    console.print(f"wrote {n} samples to {path}")


@data_app.command("make-draw")
def data_make_draw(
    out: Path = typer.Option(..., "--out", help="Folder to write draw.jsonl and images/ into."),
    n: int = typer.Option(1000, "--n", min=1, help="Number of prompts."),
    seed: int = typer.Option(0, "--seed", help="Seed; same seed, same files."),
    split: str = typer.Option(
        "train", "--split", help="train (no held-out combinations) or test (half held out)."
    ),
):
    """Render text-to-image prompts with their canonical images (generator training data)."""
    from mmllm.generation.dataset import make_draw_dataset

    path = make_draw_dataset(out, n, seed, split)
    console.print(f"wrote {n} prompts to {path}")


@data_app.command("tasks")
def data_tasks():
    """List the generated tasks and their phrasings (held-out and training-only ones marked)."""
    from mmllm.data.tasks import TASKS

    for task in TASKS.values():
        console.print(f"[bold]{task.name}[/bold]: {task.description}")
        for kind, ph in task.phrasings.items():
            for t in ph.seen:
                console.print(f"    [{kind}] {t}")
            for t in ph.heldout:
                console.print(f"    [{kind}] {t}  [dim](held out of training)[/dim]")
            for t in ph.extra:
                console.print(f"    [{kind}] {t}  [dim](training only, --phrasings wide)[/dim]")


@data_app.command("check")
def data_check(folder: Path = typer.Argument(..., help="Data folder or JSONL file.")):
    """Validate a data folder: every row, every image path."""
    from collections import Counter

    from mmllm.data.dataset import load_dataset

    samples = load_dataset(folder)
    counts = Counter(s.task for s in samples)
    console.print(
        f"{folder}: {len(samples)} valid samples; "
        + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
    )


@app.command()
def demo(
    model: Path = typer.Option(None, "--model", help="Checkpoint folder (default: shipped model)."),
    reduction: str = typer.Option("divprune:16", "--reduction", help="Reducer spec to compare."),
    max_new_tokens: int = typer.Option(24, "--max-new-tokens", min=1),
):
    """Answer a few questions about images at full and at a reduced token budget."""
    from mmllm.demo import run_demo

    run_demo(model, reduction, max_new_tokens, console)


@app.command()
def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML (or the name of a bundled recipe)."),
    smoke: bool = typer.Option(False, "--smoke", help="Run at the recipe's smoke size."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint."),
    data: Path = typer.Option(None, "--data", help="Override data.train."),
    eval_data: Path = typer.Option(None, "--eval-data", help="Override data.eval."),
    output: Path = typer.Option(None, "--output", help="Override train.output_dir."),
    init_from: Path = typer.Option(None, "--init-from", help="Override model.init_from."),
    sets: list[str] = typer.Option(
        None, "--set", help="Override any recipe key: --set train.max_steps=100 (repeatable)."
    ),
):
    """Train a model, an image tokenizer or an image generator from a recipe (transformers
    Trainer; works under accelerate/torchrun)."""
    import yaml

    from mmllm.generation.train import train_generator
    from mmllm.recipe import GeneratorRecipe, TokenizerRecipe, load_recipe
    from mmllm.train import train as run_train
    from mmllm.train_tokenizer import train_tokenizer

    overrides = {
        key: str(value)
        for key, value in (
            ("data.train", data),
            ("data.eval", eval_data),
            ("train.output_dir", output),
            ("model.init_from", init_from),
        )
        if value is not None
    }
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise MMLLMError(f"--set takes KEY=VALUE (e.g. train.max_steps=100), got '{item}'")
        overrides[key.strip()] = yaml.safe_load(value)
    loaded = load_recipe(recipe, overrides)
    runners = {TokenizerRecipe: train_tokenizer, GeneratorRecipe: train_generator}
    run = runners.get(type(loaded), run_train)
    final = run(loaded, smoke=smoke, resume=resume)
    console.print(f"saved {final}")


@app.command()
def chat(
    question: str = typer.Argument(None, help="Question; omit for an interactive session."),
    images: list[Path] = typer.Option(None, "--image", help="Image(s) for the first turn."),
    model: Path = typer.Option(None, "--model", help="Checkpoint folder (default: shipped model)."),
    reduction: str = typer.Option(None, "--reduction", help="Reducer spec to run the model at."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", min=1),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy."),
    server: str = typer.Option(
        None, "--server", help="URL of an `mmllm serve` (OpenAI-compatible) server to ask instead."
    ),
    save_dir: Path = typer.Option(
        Path("."), "--save-dir", help="Where images asked for in chat ('draw ...') are saved."
    ),
):
    """Ask the model about images (one question, or an interactive multi-turn session).

    A message that asks for an image ("draw a red circle", "generate an image of two blue
    stars") is answered by the shipped generator instead: the image is saved under --save-dir.
    """
    from mmllm.chat import reply, user_turn
    from mmllm.generation.requests import drawing_request, save_images

    drawn: list[Path] = []
    generators: list = []  # loaded at the first drawing request, then reused

    def draw(what: str) -> str:
        from mmllm.generation.model import ImageGenerator

        if not generators:
            generators.append(ImageGenerator.from_pretrained())
        generator = generators[0]
        path = save_dir / f"mmllm_image_{len(drawn)}.png"
        drawn.extend(save_images(generator.generate(what, seed=len(drawn)), path))
        return f"I drew {what} and saved it to {path}"

    images = images or []
    if question is not None and not question.strip():
        raise MMLLMError("empty question: ask something about the image")
    if question is not None and (what := drawing_request(question)) is not None:
        typer.echo(draw(what))  # before loading the understanding model: not needed
        return
    if server is not None:
        if model is not None or reduction is not None:
            raise MMLLMError("--model and --reduction are set on the server (`mmllm serve`)")
        from mmllm.serving.client import remote_reply

        def reply(_model, messages, imgs, max_new, temp):
            return remote_reply(server, messages, imgs, max_new, temp)

        mm = None
    else:
        from mmllm.default_model import load_model

        mm = load_model(model, reduction)
    if question is not None:
        typer.echo(
            reply(mm, [user_turn(question, len(images))], images, max_new_tokens, temperature)
        )
        return
    messages: list[dict] = []
    console.print("[dim]interactive chat: empty line or Ctrl-D to quit[/dim]")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            break
        if not text:
            break
        if (what := drawing_request(text)) is not None:
            console.print(f"model> {draw(what)}")
            continue
        messages.append(user_turn(text, len(images) if not messages else 0))
        answer = reply(mm, messages, images, max_new_tokens, temperature)
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        console.print(f"model> {answer}")


@app.command()
def generate(
    prompt: str = typer.Argument(
        ..., help='What to draw, e.g. "a red circle left of a blue square".'
    ),
    out: Path = typer.Option(Path("image.png"), "--out", "-o", help="Image file to write."),
    model: Path = typer.Option(
        None, "--model", help="Generator folder (default: the shipped generator)."
    ),
    n: int = typer.Option(1, "--n", min=1, help="Images to sample (out_0.png, out_1.png, ...)."),
    temperature: float = typer.Option(
        0.0, "--temperature", min=0.0, help="0 = greedy (best on the benchmark)."
    ),
    top_k: int = typer.Option(50, "--top-k", min=1, help="Sample among the k likeliest codes."),
    cfg: float = typer.Option(
        1.0, "--cfg", min=1.0, help="Classifier-free guidance scale (1 = none, the best so far)."
    ),
    seed: int = typer.Option(0, "--seed", help="Sampling seed; same seed, same image."),
    size: int = typer.Option(256, "--size", min=16, help="Saved image side in px (upscaled)."),
):
    """Draw an image from a text prompt: the LLM writes image tokens, the tokenizer decodes them."""
    from mmllm.generation.model import ImageGenerator
    from mmllm.generation.requests import save_images

    generator = ImageGenerator.from_pretrained(model)
    images = generator.generate(
        [prompt] * n, temperature=temperature, top_k=top_k, cfg_scale=cfg, seed=seed
    )
    for path in save_images(images, out, size):
        console.print(f"saved {path}")


@app.command("eval")
def eval_cmd(
    data: Path = typer.Option(..., "--data", help="Data folder (JSONL + images) to score."),
    model: Path = typer.Option(None, "--model", help="Checkpoint folder (default: shipped model)."),
    reductions: list[str] = typer.Option(None, "--reduction", help="Reducer spec(s); repeatable."),
    limit: int = typer.Option(None, "--limit", min=1, help="Score only the first N samples."),
    batch_size: int = typer.Option(8, "--batch-size", min=1),
    plot: Path = typer.Option(None, "--plot", help="PNG: accuracy against visual tokens."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (see README)."),
    nll: bool = typer.Option(
        False, "--nll", help="Also score the reference answer's NLL per token (teacher forced)."
    ),
):
    """Exact-match accuracy per task, visual tokens, prefill and total time per sample."""
    from mmllm.data.dataset import load_dataset
    from mmllm.default_model import load_model
    from mmllm.evaluate import evaluate, plot_accuracy
    from mmllm.reduction import build

    specs = reductions or [None]
    for spec in specs:
        if spec is not None:
            build(spec)  # bad specs fail before the model loads
    samples = load_dataset(data)[:limit]
    missing = [i for i, s in enumerate(samples) if s.answer is None]
    if missing:
        raise MMLLMError(f"{data}: {len(missing)} row(s) have no 'answer' to score against")
    mm = load_model(model)
    results = [
        evaluate(mm, samples, spec, batch_size, progress=not as_json, answer_nll=nll)
        for spec in specs
    ]
    if as_json:
        rows = [r.summary() for r in results]
        typer.echo(json.dumps(rows[0] if len(rows) == 1 else {"results": rows}, indent=2))
    else:
        tasks = sorted({t for r in results for t in r.per_task})
        table = Table(title=f"{data} (n = {results[0].n})")
        extra = ("answer NLL",) if nll else ()
        for col in ("reduction", "tokens", "overall", *tasks, *extra, "prefill ms", "total ms"):
            table.add_column(col)
        for r in results:
            table.add_row(
                r.reduction,
                str(r.visual_tokens),
                f"{100 * r.overall:.1f}",
                *[f"{100 * r.per_task.get(t, 0):.1f}" for t in tasks],
                *([f"{r.answer_nll:.3f}"] if nll else []),
                f"{r.prefill_ms:.1f}",
                f"{r.total_ms:.1f}",
            )
        console.print(table)
    if plot is not None or len(results) > 1:
        path = plot or Path("eval_accuracy.png")
        plot_accuracy(results, path)
        if not as_json:
            console.print(f"plot: {path}")


@app.command()
def merge(
    model: Path = typer.Argument(..., help="Checkpoint with a lora/ folder."),
    out: Path = typer.Option(..., "--out", help="Where to write the merged checkpoint."),
):
    """Fold LoRA into the base LLM: a self-contained checkpoint with a full LLM folder."""
    from mmllm.merge import merge_lora

    console.print(f"merged checkpoint: {merge_lora(model, out)}")


@app.command()
def average(
    models: list[Path] = typer.Argument(..., help="Two or more checkpoints of one architecture."),
    out: Path = typer.Option(..., "--out", help="Where to write the averaged checkpoint."),
    weights: str | None = typer.Option(
        None, "--weights", help="Comma-separated weight per checkpoint (default: equal)."
    ),
    rank: int | None = typer.Option(
        None,
        "--rank",
        help="Truncate the averaged LoRA to this rank by SVD (default: exact, rank n * r).",
    ),
):
    """Average checkpoints (a model soup): adapter, encoder and the LoRA updates, exactly."""
    from mmllm.averaging import average_checkpoints

    try:
        parsed = [float(w) for w in weights.split(",")] if weights else None
    except ValueError as err:
        raise typer.BadParameter(f"--weights must be numbers like 0.5,0.5: {err}") from err
    folder = average_checkpoints(models, out, weights=parsed, rank=rank)
    console.print(f"averaged checkpoint: {folder}")


@app.command()
def export(
    out: Path = typer.Argument(..., help="Folder to write (must be new or empty)."),
    model: Path = typer.Option(None, "--model", help="Checkpoint folder (default: shipped model)."),
    reduction: str = typer.Option(None, "--reduction", help="Reducer spec baked into the export."),
    quantize: str = typer.Option(
        None, "--quantize", help="Quantized LLM: w8a8 (int8), w8a8-dynamic."
    ),
    keep_lora: bool = typer.Option(
        False, "--keep-lora", help="Keep LoRA apart (served by vLLM's LoRA) instead of merging."
    ),
    calibration_data: Path = typer.Option(
        None, "--calibration-data", help="w8a8: data folder to calibrate on (default: generated)."
    ),
    calibration_samples: int = typer.Option(32, "--calibration-samples", min=1),
):
    """Write a vLLM-servable folder: LoRA merged, adapter + LLM in one safetensors file."""
    from mmllm.serving.export import export_for_vllm

    calibration = None
    if calibration_data is not None:
        from mmllm.data.dataset import load_dataset

        calibration = load_dataset(calibration_data)[:calibration_samples]
    elif quantize is not None:
        from mmllm.serving.export import calibration_samples as generated

        calibration = generated(calibration_samples)
    folder = export_for_vllm(
        model, out, reduction, quantize=quantize, keep_lora=keep_lora, calibration=calibration
    )
    console.print(f"exported: {folder}")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def serve(
    ctx: typer.Context,
    model: Path = typer.Argument(None, help="Checkpoint or exported folder (default: shipped)."),
    reduction: str = typer.Option(None, "--reduction", help="Override the exported reducer."),
    quantization: str = typer.Option(None, "--quantization", help="Preset: fp8, w8a8 (int8)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Bind address (loopback by default)."),
    port: int = typer.Option(8000, "--port"),
    allow_media_domain: list[str] = typer.Option(
        None, "--allow-media-domain", help="Allow http(s) image URLs from this domain (repeat)."
    ),
    max_images: int = typer.Option(4, "--max-images", help="Images allowed per request."),
    max_model_len: int = typer.Option(2048, "--max-model-len"),
    max_body_mb: float = typer.Option(32.0, "--max-body-mb", help="Larger bodies get 413."),
    tensor_parallel_size: int = typer.Option(1, "--tensor-parallel-size", "-tp"),
    pipeline_parallel_size: int = typer.Option(1, "--pipeline-parallel-size", "-pp"),
    data_parallel_size: int = typer.Option(1, "--data-parallel-size", "-dp"),
    nnodes: int = typer.Option(1, "--nnodes", help="Nodes for multi-node serving."),
    node_rank: int = typer.Option(0, "--node-rank"),
    master_addr: str = typer.Option(None, "--master-addr", help="Rank-0 node address."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the vLLM command, don't start."),
):
    """Start vLLM's OpenAI-compatible server on an mmllm model (extra args go to vLLM)."""
    from mmllm.serving.server import ServeOptions, serve, vllm_command

    opts = ServeOptions(
        model=str(model) if model else None,
        reduction=reduction,
        quantization=quantization,
        host=host,
        port=port,
        allow_media_domains=list(allow_media_domain or []),
        max_images=max_images,
        max_model_len=max_model_len,
        max_body_mb=max_body_mb,
        tensor_parallel_size=tensor_parallel_size,
        pipeline_parallel_size=pipeline_parallel_size,
        data_parallel_size=data_parallel_size,
        nnodes=nnodes,
        node_rank=node_rank,
        master_addr=master_addr,
        extra=list(ctx.args),
    )
    if dry_run:
        typer.echo(json.dumps(vllm_command(opts)))
        return
    serve(opts)


@bench_app.command("reduction")
def bench_reduction(
    data: Path = typer.Option(..., "--data", help="Held-out data folder."),
    model: Path = typer.Option(None, "--model", help="Checkpoint folder (default: shipped model)."),
    methods: str = typer.Option(
        "",
        "--methods",
        help="Comma-separated methods (default: all); 'ablation' adds focus's and coverage's.",
    ),
    limit: int = typer.Option(None, "--limit", min=1, help="Use the first N samples."),
    out: Path = typer.Option(Path("benchmarks/results"), "--out", help="Output folder."),
    batch_size: int = typer.Option(
        8, "--batch-size", min=1, help="Samples per forward (timings are per sample)."
    ),
    append: bool = typer.Option(
        False,
        "--append",
        help="Add the methods to the result already in --out (the full-token pass must match).",
    ),
):
    """Every reducer at 50/25/11.1/5.6% of the visual tokens: accuracy, retention, timings."""
    from mmllm.bench import ABLATIONS, METHODS, run_reduction_bench
    from mmllm.data.dataset import load_dataset
    from mmllm.default_model import load_model

    chosen = [m.strip() for m in methods.split(",") if m.strip()] or list(METHODS)
    if "ablation" in chosen:
        chosen = [m for m in chosen if m != "ablation"] + list(ABLATIONS)
    known = {**METHODS, **ABLATIONS}
    unknown = [m for m in chosen if m not in known]
    if unknown:
        raise MMLLMError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(known)}")
    samples = load_dataset(data)[:limit]
    run_reduction_bench(load_model(model), samples, chosen, out, batch_size, append=append)
    console.print((out / "reduction.md").read_text())


@bench_app.command("serve")
def bench_serve(
    reductions: list[str] = typer.Option(
        None,
        "--reduction",
        help="Budgets to serve (repeat); default: identity, coverage:16, coverage:5.",
    ),
    concurrency: list[int] = typer.Option(
        None, "--concurrency", help="Clients (repeat); default 1 8 32."
    ),
    model: Path = typer.Option(None, "--model", help="Checkpoint or export (default: shipped)."),
    data: Path = typer.Option(None, "--data", help="Held-out data folder (default: generated)."),
    requests_per_client: int = typer.Option(4, "--requests-per-client", min=1),
    max_tokens: int = typer.Option(16, "--max-tokens", min=1, help="New tokens per request."),
    out: Path = typer.Option(Path("benchmarks/results"), "--out", help="Output folder."),
):
    """Requests/s, time to first token and tokens/s of `mmllm serve`, full vs reduced budgets."""
    from mmllm.serving.bench import run_serve_bench, write_serve_results
    from mmllm.serving.server import check_vllm_installed

    check_vllm_installed()
    specs = reductions or ["identity", "coverage:16", "coverage:5"]
    rows = run_serve_bench(
        specs,
        concurrency or [1, 8, 32],
        model=str(model) if model else None,
        data=data,
        requests_per_client=requests_per_client,
        max_tokens=max_tokens,
        log_dir=out / "serve_logs",
    )
    command = (
        "mmllm bench serve " + " ".join(sys.argv[3:]) if len(sys.argv) > 3 else "mmllm bench serve"
    )
    console.print(write_serve_results(rows, out, command).read_text())


@bench_app.command("tokenizers")
def bench_tokenizers(
    data: Path = typer.Option(..., "--data", help="Training images (any folder)."),
    eval_data: Path = typer.Option(..., "--eval-data", help="Held-out images."),
    configs: str = typer.Option("", "--configs", help="Comma-separated configs (default: all)."),
    steps: int = typer.Option(300, "--steps", min=1, help="Training steps per configuration."),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    channels: int = typer.Option(
        64, "--channels", min=8, help="Width of every tokenizer (a multiple of 8)."
    ),
    legibility_data: Path = typer.Option(
        None,
        "--legibility-data",
        help="Data folder with text / small_object questions: also ask the understanding model "
        "about originals vs reconstructions.",
    ),
    legibility_n: int = typer.Option(40, "--legibility-n", min=2),
    out: Path = typer.Option(Path("benchmarks/results"), "--out", help="Output folder."),
    resume: bool = typer.Option(
        False,
        "--resume",
        help="Score configurations already finished under OUT/runs with the same recipe "
        "instead of training them again.",
    ),
):
    """Quantizers and 2D vs 1D tokenizers at equal bits per image: PSNR, SSIM, codebook usage."""
    from mmllm.bench_tokenizers import CONFIGS, run_tokenizer_bench

    names = [c.strip() for c in configs.split(",") if c.strip()] or list(CONFIGS)
    unknown = [c for c in names if c not in CONFIGS]
    if unknown:
        raise MMLLMError(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(CONFIGS)}")
    if channels % 8:
        raise MMLLMError(f"--channels must be a multiple of 8 (GroupNorm groups), got {channels}")
    run_tokenizer_bench(
        data,
        eval_data,
        out,
        names,
        steps,
        batch_size,
        channels=channels,
        legibility_data=legibility_data,
        legibility_n=legibility_n,
        resume=resume,
    )
    console.print((out / "tokenizers.md").read_text())


@app.command()
def version():
    """Print the mmllm version."""
    from mmllm import __version__

    typer.echo(__version__)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, turning user errors into one-line messages."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app(args=argv, prog_name="mmllm")
    except MMLLMError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
