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

--vs_trainer runs, instead of the recipes, this engine against transformers.Trainer on the same BERT-base-sized
and ViT-B/16-sized models (random init: no weights need to travel), the same synthetic data, bf16, the same
batch and steps, in one invocation: samples/s of each, model FLOP/s against the measured bf16 peak.

    python bench/bench_gpu.py --vs_trainer --out bench/results          # on a GPU: bench_gpu_vs_trainer.json
    python bench/bench_gpu.py --vs_trainer --dry_run --out /tmp/x       # the plumbing on a CPU, tiny models, fp32

--random_init builds each pretrained model from its config (a folder holding config.json and the tokenizer
or image processor) when its weights can't be had, e.g. on a machine with no network, where the weights are
too large to carry. Throughput does not depend on the values of the weights; accuracy and perplexity do, so
this mode prints no quality numbers.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.core.atomic_io import atomic_write_json

RECIPES = {
    # recipe: (pretrained alias, Auto class for --random_init, overrides for a GPU)
    "sentiment": (
        "minilm",
        "AutoModel",
        [
            "--batch_size",
            "256",
            "--eval_batch_size",
            "512",
            "--max_length",
            "64",
            "--max_eval_samples",
            "1024",
            "--eval_steps",
            "100000",
        ],
    ),
    "text_generation": (
        "smollm2",
        "AutoModelForCausalLM",
        [
            "--lora",
            "false",
            "--batch_size",
            "32",
            "--block_size",
            "256",
            "--learning_rate",
            "5e-5",
            "--max_eval_samples",
            "256",
            "--max_test_samples",
            "512",
            "--eval_steps",
            "100000",
        ],
    ),
    "image_classification": (
        "dinov2-small",
        "AutoModel",
        [
            "--batch_size",
            "128",
            "--eval_batch_size",
            "256",
            "--image_size",
            "224",
            "--freeze_layers",
            "0",
            "--max_eval_samples",
            "512",
            "--eval_steps",
            "100000",
            "--scratch_num_epochs",
            "1",
        ],
    ),
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
            embeddings.weight[embeddings.padding_idx].normal_(
                0, config.initializer_range if hasattr(config, "initializer_range") else 0.02
            )
    model.save_pretrained(target)
    return str(target)


def non_embedding_parameters(run_dir: Path) -> int:
    import transformers

    from finetune.models.loading import non_embedding_parameters as count

    model = transformers.AutoModel.from_pretrained(run_dir)
    return count(model)


def tokens_trained(entry: dict, config) -> int:
    if entry["train_tokens"]:
        return entry["train_tokens"]
    patches = (config.image_size // 14) ** 2 + 1  # images: DINOv2's 14-pixel patches plus [CLS]
    return entry["train_samples"] * patches


# ---- --vs_trainer: this engine against transformers.Trainer, same model, data, precision, batch and steps -----

VS_TRAINER = {
    # name: (config class, model class, config kwargs, tokens per sample, batch size)
    "bert-base": ("BertConfig", "BertForSequenceClassification", {"num_labels": 2}, 128, 64),  # 12 x 768, sequence 128
    "vit-b16": (
        "ViTConfig",
        "ViTForImageClassification",
        {"num_labels": 10},
        197,
        64,
    ),  # 12 x 768, 224 px, 196 patches + CLS
}
TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}


class SyntheticData:
    """`length` samples that cycle through a fixed pool of random ones: token ids (all real, no padding) or pixels.

    A torch map-style dataset of dicts of tensors: this engine's DataLoader and Trainer's read the very same one.
    """

    def __init__(
        self,
        name: str,
        length: int,
        tokens: int,
        num_labels: int,
        vocab_size: int = 0,
        image_size: int = 0,
        pool: int = 256,
    ):
        import torch

        g = torch.Generator().manual_seed(0)
        self.length, self.pool = length, pool
        self.labels = torch.randint(0, num_labels, (pool,), generator=g)
        if name.startswith("bert"):
            self.inputs = {
                "input_ids": torch.randint(1000 % vocab_size, vocab_size, (pool, tokens), generator=g),
                "attention_mask": torch.ones(pool, tokens, dtype=torch.long),
            }
        else:
            self.inputs = {"pixel_values": torch.randn(pool, 3, image_size, image_size, generator=g)}

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        j = i % self.pool
        return {**{k: v[j] for k, v in self.inputs.items()}, "labels": self.labels[j]}


class StepTimer:
    """Wall time from the end of optimizer step `warmup` to the end of the last step, synchronising the GPU at just
    those two steps (a global optimizer post-hook, so it times either loop the same way and never stalls it)."""

    def __init__(self, warmup: int, total: int):
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.warmup, self.total, self.steps, self.start, self.end = warmup, total, 0, None, None
        self._handle = register_optimizer_step_post_hook(self._on_step)

    def _on_step(self, optimizer, args, kwargs):
        import torch

        self.steps += 1
        if self.steps in (self.warmup, self.total):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if self.steps == self.warmup:
                self.start = time.perf_counter()
            else:
                self.end = time.perf_counter()

    def close(self) -> float:
        self._handle.remove()
        if self.start is None or self.end is None:
            raise RuntimeError(f"the loop ran {self.steps} optimizer steps, fewer than the {self.total} asked for")
        return self.end - self.start


def build_model(name: str, dry_run: bool):
    import torch
    import transformers

    config_class, model_class, kwargs, _, _ = VS_TRAINER[name]
    config = getattr(transformers, config_class)(
        **kwargs,
        **(TINY if dry_run else {}),
        **({"image_size": 32, "patch_size": 8} if dry_run and name.startswith("vit") else {}),
    )
    torch.manual_seed(0)
    return getattr(transformers, model_class)(config)


def run_vs_trainer_contender(
    contender: str, name: str, steps: int, warmup: int, batch: int, precision: str, work: Path, dry_run: bool
) -> dict:
    import torch
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # one mixed precision per process state: start clean
    model = build_model(name, dry_run)
    config = model.config
    tokens = VS_TRAINER[name][3] if not dry_run else (16 if name.startswith("bert") else (32 // 8) ** 2 + 1)
    data = SyntheticData(
        name,
        steps * batch,
        tokens if name.startswith("bert") else 0,
        config.num_labels,
        vocab_size=getattr(config, "vocab_size", 0),
        image_size=getattr(config, "image_size", 0),
    )
    timer = StepTimer(warmup, steps)
    try:
        if contender == "engine":
            from finetune.core import engine
            from finetune.core.config import TrainingConfig

            loader = torch.utils.data.DataLoader(
                data,
                batch_size=batch,
                shuffle=True,
                drop_last=True,
                pin_memory=torch.cuda.is_available(),
                generator=torch.Generator().manual_seed(0),
            )
            training = TrainingConfig(
                output_dir=str(work),
                max_steps=steps,
                batch_size=batch,
                learning_rate=5e-5,
                warmup_ratio=0.0,
                mixed_precision=precision,
                log_steps=10**6,
                compare=False,
            )
            engine.train(model, {"train": loader}, None, training, work, name="engine")
        else:
            from transformers import Trainer, TrainingArguments

            args = TrainingArguments(
                output_dir=str(work),
                use_cpu=not torch.cuda.is_available(),
                bf16=precision == "bf16",
                max_steps=steps,
                per_device_train_batch_size=batch,
                learning_rate=5e-5,
                dataloader_drop_last=True,
                eval_strategy="no",
                save_strategy="no",
                logging_strategy="no",
                report_to="none",
                seed=0,
            )
            Trainer(model=model, args=args, train_dataset=data).train()
        seconds = timer.close()
    finally:
        timer._handle.remove()
    from finetune.models.loading import non_embedding_parameters

    samples = (steps - warmup) * batch
    flops = 6 * non_embedding_parameters(model) * samples * tokens / seconds
    return {
        "samples_per_second": samples / seconds,
        "timed_steps": steps - warmup,
        "seconds": seconds,
        "model_flops_per_second": flops,
        "tokens_per_sample": tokens,
        "non_embedding_parameters": non_embedding_parameters(model),
    }


def vs_trainer(args, extra) -> int:
    import torch
    import transformers

    if extra:
        print(f"error: --vs_trainer takes no recipe flags, got {' '.join(extra)}", file=sys.stderr)
        return 2
    if args.warmup_steps < 1 or args.steps <= args.warmup_steps:
        print(f"error: --steps ({args.steps}) must exceed --warmup_steps ({args.warmup_steps}) >= 1", file=sys.stderr)
        return 2
    gpu = torch.cuda.is_available()
    if not gpu and not args.dry_run:
        print("error: --vs_trainer needs a CUDA GPU (or --dry_run to check the plumbing on a CPU)", file=sys.stderr)
        return 2
    transformers.logging.set_verbosity_error()
    steps, warmup = (5, 2) if args.dry_run else (args.steps, args.warmup_steps)
    precision = "bf16" if gpu else "no"
    peak = bf16_peak() if gpu else _cpu_peak(256, 2)
    report = {
        "what": "bench/bench_gpu.py --vs_trainer: this engine vs transformers.Trainer, random init, synthetic data",
        "device": torch.cuda.get_device_name() if gpu else "cpu (dry run: tiny models, fp32)",
        "precision": precision,
        "peak_tflops": round(peak / 1e12, 3),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "steps": steps,
        "untimed_warmup_steps": warmup,
        "models": {},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "gpu_runs"
    for name in args.models:
        batch = VS_TRAINER[name][4] if not args.dry_run else 4
        row = {"batch_size": batch}
        for contender in ("engine", "trainer"):
            measured = run_vs_trainer_contender(
                contender, name, steps, warmup, batch, precision, work / f"{name}_{contender}", args.dry_run
            )
            measured["peak_fraction"] = round(measured["model_flops_per_second"] / peak, 4)
            row[contender] = measured
            print(
                f"{name} {contender}: {measured['samples_per_second']:.1f} samples/s, "
                f"{measured['model_flops_per_second'] / 1e12:.2f} TFLOP/s = {measured['peak_fraction']:.3f} of peak",
                flush=True,
            )
        row["engine_vs_trainer"] = round(row["engine"]["samples_per_second"] / row["trainer"]["samples_per_second"], 3)
        report["models"][name] = row
        atomic_write_json(args.out / "bench_gpu_vs_trainer.json", report)  # after each model
    print(
        " ".join(
            f"{n}_engine_vs_trainer={r['engine_vs_trainer']:.2f} {n}_peak_fraction={r['engine']['peak_fraction']:.3f}"
            for n, r in report["models"].items()
        )
    )
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per model")
    parser.add_argument("--random_init", action="store_true")
    parser.add_argument(
        "--models_dir", type=Path, help="with --random_init: folder of <alias>/config.json + tokenizer/processor"
    )
    parser.add_argument("--work", type=Path, help="where the recipes' run folders go (default: OUT/gpu_runs)")
    parser.add_argument(
        "--allow_cpu", action="store_true", help="smoke-test the script's plumbing on a CPU (fp32, tiny peak)"
    )
    parser.add_argument(
        "--vs_trainer", action="store_true", help="engine vs transformers.Trainer on BERT-base / ViT-B/16-sized models"
    )
    parser.add_argument(
        "--models", nargs="+", default=list(VS_TRAINER), choices=list(VS_TRAINER), help="with --vs_trainer"
    )
    parser.add_argument(
        "--warmup_steps", type=int, default=10, help="with --vs_trainer: untimed steps first (kernels, allocator)"
    )
    parser.add_argument(
        "--dry_run", action="store_true", help="with --vs_trainer: tiny models, 3+2 steps, fp32 on a CPU"
    )
    args, extra = parser.parse_known_args(argv)  # anything else is passed to every recipe, last (so it wins)
    if args.vs_trainer:
        return vs_trainer(args, extra)

    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("error: bench_gpu.py needs a CUDA GPU (bench/bench_engine.py measures the CPU)", file=sys.stderr)
        return 2
    precision = "bf16" if torch.cuda.is_available() else "no"
    from finetune.core.config import parse_config

    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or args.out / "gpu_runs"
    peak = bf16_peak() if torch.cuda.is_available() else _cpu_peak()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (smoke run)"
    report = {
        "device": device,
        "bf16_peak_tflops": round(peak / 1e12, 1),
        "torch": torch.__version__,
        "random_init": args.random_init,
        "recipes": {},
    }
    print(f"{report['device']}: bf16 matmul peak {peak / 1e12:.0f} TFLOP/s (8192^3, best of 10)", flush=True)
    for name in args.recipes:
        alias, auto_class, overrides = RECIPES[name]
        recipe = importlib.import_module(f"recipes.{name}")
        model = random_init(alias, auto_class, args.models_dir, work) if args.random_init else alias
        argv = [
            "--output_dir",
            str(work / name),
            "--overwrite",
            "--model",
            model,
            "--mixed_precision",
            precision,
            "--max_steps",
            str(args.steps),
            *overrides,
            *extra,
        ]
        config_class = next(
            v for k, v in vars(recipe).items() if k.endswith("Config") and v.__module__ == recipe.__name__
        )
        config = parse_config(config_class, argv)
        results = recipe.run(config)
        rows = {}
        for entry in results["models"]:
            row = {
                "samples_per_second": entry["samples_per_second"],
                "train_seconds": entry["train_seconds"],
                "train_samples": entry["train_samples"],
                "steps": entry["steps"],
            }
            if entry["role"] == "pretrained":
                params = non_embedding_parameters(Path(config.output_dir))
                flops = 6 * params * tokens_trained(entry, config) / entry["train_seconds"]
                row.update(
                    non_embedding_parameters=params,
                    model_tflops=round(flops / 1e12, 2),
                    peak_fraction=round(flops / peak, 4),
                )
            if not args.random_init:
                row["test"] = entry["test"]
            rows[entry["role"]] = row
        report["recipes"][name] = rows
        atomic_write_json(args.out / "bench_gpu.json", report)  # after each recipe
        p = rows["pretrained"]
        print(
            f"{name}: {p['samples_per_second']:.0f} samples/s, {p['model_tflops']:.1f} TFLOP/s = "
            f"{p['peak_fraction']:.3f} of peak; scratch "
            f"{rows.get('scratch', {}).get('samples_per_second', 0):.0f} samples/s",
            flush=True,
        )
    print(" ".join(f"{n}_peak_fraction={r['pretrained']['peak_fraction']:.3f}" for n, r in report["recipes"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
