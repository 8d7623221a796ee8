"""Each recipe on a GPU in bf16: samples/s, and model FLOP/s as a fraction of the bf16 matmul peak measured
in the same run.

    python bench/bench_gpu.py --out bench/results                         # real weights (needs the assets)
    python bench/bench_gpu.py --out DIR --random_init --models_dir DIR    # configs only (see below)

Every recipe runs through its own `run(config)`: the code path `finetune train` takes, with
`--mixed_precision bf16` and batch sizes that suit a GPU. The from-scratch comparison runs too, and is
timed alike.

Model FLOP/s = 6 x non-embedding parameters x real (non-padding) tokens per second, where an image's tokens are
its patches plus [CLS]. It counts the useful work of a full fine-tune, so the text-generation recipe runs
with `--lora false` here. The peak is the best of several 8192^3 bf16 matmuls timed in the same process.

--random_init builds each pretrained model from its config (a folder holding config.json and the tokenizer
or image processor) when its weights can't be had, e.g. on a machine with no network, where the weights are
too large to carry. Throughput does not depend on the values of the weights; accuracy and perplexity do, so
this mode prints no quality numbers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RECIPES = {
    # recipe: (pretrained alias, Auto class for --random_init, overrides for a GPU)
    "sentiment": ("minilm", "AutoModel", ["--batch_size", "256", "--eval_batch_size", "512", "--max_length", "64",
                                          "--max_eval_samples", "1024", "--eval_steps", "100000"]),
    "text_generation": ("smollm2", "AutoModelForCausalLM", ["--lora", "false", "--batch_size", "32", "--block_size", "256",
                                                            "--learning_rate", "5e-5", "--max_eval_samples", "256",
                                                            "--max_test_samples", "512", "--eval_steps", "100000"]),
    "image_classification": ("dinov2-small", "AutoModel", ["--batch_size", "128", "--eval_batch_size", "256", "--image_size", "224",
                                                           "--freeze_layers", "0", "--max_eval_samples", "512",
                                                           "--eval_steps", "100000", "--scratch_num_epochs", "1"]),
}


def _cpu_peak(size: int = 1024, reps: int = 3) -> float:
    """fp32 on the CPU, for --allow_cpu smoke runs only."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size**3 * reps / (time.perf_counter() - start)


def bf16_peak(size: int = 8192, reps: int = 10) -> float:
    import torch

    a = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size, size, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best



def random_init(alias: str, auto_class: str, models_dir: Path, work: Path) -> str:
    """A folder with the alias's config + tokenizer/processor and freshly initialised weights."""
    import torch
    import transformers

    source, target = models_dir / alias, work / f"random-{alias}"
    shutil.copytree(source, target, dirs_exist_ok=True)
    config = transformers.AutoConfig.from_pretrained(source)
    model = getattr(transformers, auto_class).from_config(config)
    # from_config zeroes the embedding row of pad_token_id. SmolLM2 pads with its EOS, which real text holds
    # every few dozen tokens; a trained checkpoint has no zero rows, so give that row ordinary random values.
    embeddings = model.get_input_embeddings()
    if getattr(embeddings, "padding_idx", None) is not None:
        with torch.no_grad():
            embeddings.weight[embeddings.padding_idx].normal_(0, config.initializer_range if hasattr(config, "initializer_range") else 0.02)
    model.save_pretrained(target)
    return str(target)


def non_embedding_parameters(run_dir: Path) -> int:
    import transformers

    from finetune.models import non_embedding_parameters as count

    model = transformers.AutoModel.from_pretrained(run_dir)
    return count(model)


def tokens_trained(entry: dict, config) -> int:
    if entry["train_tokens"]:
        return entry["train_tokens"]
    patches = (config.image_size // 14) ** 2 + 1  # images: DINOv2's 14-pixel patches plus [CLS]
    return entry["train_samples"] * patches


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per model")
    parser.add_argument("--random_init", action="store_true")
    parser.add_argument("--models_dir", type=Path, help="with --random_init: folder of <alias>/config.json + tokenizer/processor")
    parser.add_argument("--work", type=Path, help="where the recipes' run folders go (default: OUT/gpu_runs)")
    parser.add_argument("--allow_cpu", action="store_true", help="smoke-test the script's plumbing on a CPU (fp32, tiny peak)")
    args, extra = parser.parse_known_args(argv)  # anything else is passed to every recipe, last (so it wins)

    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("error: bench_gpu.py needs a CUDA GPU (bench/bench_engine.py measures the CPU)", file=sys.stderr)
        return 2
    precision = "bf16" if torch.cuda.is_available() else "no"
    from finetune.config import parse_config

    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "gpu_runs"
    peak = bf16_peak() if torch.cuda.is_available() else _cpu_peak()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (smoke run)"
    report = {"device": device, "bf16_peak_tflops": round(peak / 1e12, 1),
              "torch": torch.__version__, "random_init": args.random_init, "recipes": {}}
    print(f"{report['device']}: bf16 matmul peak {peak / 1e12:.0f} TFLOP/s (8192^3, best of 10)", flush=True)
    for name in args.recipes:
        alias, auto_class, overrides = RECIPES[name]
        recipe = importlib.import_module(f"recipes.{name}")
        model = random_init(alias, auto_class, args.models_dir, work) if args.random_init else alias
        argv = ["--output_dir", str(work / name), "--overwrite", "--model", model, "--mixed_precision", precision,
                "--max_steps", str(args.steps), *overrides, *extra]
        config_class = next(v for k, v in vars(recipe).items() if k.endswith("Config") and v.__module__ == recipe.__name__)
        config = parse_config(config_class, argv, recipe.DEFAULT_CONFIG)
        results = recipe.run(config)
        rows = {}
        for entry in results["models"]:
            row = {"samples_per_second": entry["samples_per_second"], "train_seconds": entry["train_seconds"],
                   "train_samples": entry["train_samples"], "steps": entry["steps"]}
            if entry["role"] == "pretrained":
                params = non_embedding_parameters(Path(config.output_dir))
                flops = 6 * params * tokens_trained(entry, config) / entry["train_seconds"]
                row.update(non_embedding_parameters=params, model_tflops=round(flops / 1e12, 2),
                           peak_fraction=round(flops / peak, 4))
            if not args.random_init:
                row["test"] = entry["test"]
            rows[entry["role"]] = row
        report["recipes"][name] = rows
        (args.out / "bench_gpu.json").write_text(json.dumps(report, indent=2) + "\n")  # after each recipe
        p = rows["pretrained"]
        print(f"{name}: {p['samples_per_second']:.0f} samples/s, {p['model_tflops']:.1f} TFLOP/s = "
              f"{p['peak_fraction']:.3f} of peak; scratch {rows.get('scratch', {}).get('samples_per_second', 0):.0f} samples/s", flush=True)
    print(" ".join(f"{n}_peak_fraction={r['pretrained']['peak_fraction']:.3f}" for n, r in report["recipes"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
