"""Input pipelines that keep up with the model: work done once is cached, work done per epoch runs in workers.

Images, in three stages:
    once      decode, convert to RGB, resize / center-crop to the model's input size -> uint8 arrays in a `datasets`
              Arrow cache under $FINETUNE_PIPELINE_CACHE, else <cache>/pipeline/ (<cache>: $FINETUNE_CACHE, else
              ~/.cache/finetune), keyed by the images'
              bytes (or paths, sizes and mtimes), the labels and the resize settings: a second run reads it back
    per epoch the random affine augmentation (training only), in DataLoader worker processes (--num_workers);
              each example's randomness comes from (seed, epoch, index) alone, so a resumed run, any number of
              workers, and an uninterrupted run all see the same pixels
    on device rescale and normalise (the processor's mean / std) in a forward pre-hook of the model, on whatever
              device the uint8 batch was moved to (4x less to copy than float32; pinned memory on a GPU)

The disk cache itself (`cached_map`, shared with the text path) is finetune/data/cache.py; this module is the
image path's alone, so text never imports image code.
"""

from __future__ import annotations

import hashlib
import os
from typing import Optional

from finetune.data import images
from finetune.data.cache import cache_root, cached_map, content_key
from finetune.data.images import RandomAffine
from finetune.data.sampling import LengthGroupedBatchSampler


def default_num_workers() -> int:
    """DataLoader workers: none on 1-2 cores (they would steal the cores the model trains on), else cores - 1, at most
    8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 0 if cores <= 2 else min(cores - 1, 8)


# ---- images -------------------------------------------------------------------------------------------------


def resize_settings(processor) -> dict:
    """The parts of an image processor that shape the cached pixels (not rescale / normalise: done on device)."""
    settings = processor.to_dict()
    keep = ("size", "crop_size", "do_resize", "do_center_crop", "resample", "do_convert_rgb", "image_processor_type")
    return {"class": type(processor).__name__, **{k: settings.get(k) for k in keep}}


def cached_pixels(split, processor):
    """{"image" (undecoded), "label"} -> {"pixels": uint8 (3, H, W), "label"}, decoded and resized once, cached.

    Returns (the Arrow-backed dataset, True if read from the cache); `pixel_arrays` reads it as numpy.
    """
    from datasets import Array3D, Features

    if len(split) == 0:
        raise ValueError("cached_pixels needs at least one image")

    def features():  # the output shape, from the first image: only when the cache misses
        channels, height, width = resized(processor, [images.to_rgb(images.open_image(split[0]["image"]))]).shape[1:]
        return Features({"pixels": Array3D((channels, height, width), "uint8"), "label": split.features["label"]})

    def decode_and_resize(batch):
        return {"pixels": resized(processor, [images.to_rgb(images.open_image(v)) for v in batch["image"]])}

    key = content_key(split, ["image", "label"], resize_settings(processor))
    dataset, hit = cached_map(
        split.select_columns(["image", "label"]),
        decode_and_resize,
        key,
        "pixels",
        remove_columns=["image"],
        features=features,
        batch_size=256,
    )
    return dataset, hit


def pixel_arrays(dataset):
    """(pixels view: view[indices]["pixels"] -> uint8 (n, 3, H, W), labels: int64 array) of a cached_pixels dataset.

    (datasets' numpy format turns every integer into int64 unless told a dtype, and labels may not fit in uint8.)
    """
    import numpy as np

    return dataset.with_format("numpy", columns=["pixels"], dtype=np.uint8), np.asarray(
        dataset["label"], dtype=np.int64
    )


def resized(processor, images):
    """The processor's resize / crop / RGB steps only, as uint8 (N, 3, H, W): rescale and normalise come later."""
    import numpy as np

    pixels = processor(images=images, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"]
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


class PixelBatches:
    """A map-style dataset over cached pixels that returns whole batches: {"pixel_values": uint8, "labels"}.

    With `augment`, each example gets the augmentation drawn from a generator seeded by (seed, epoch, index),
    where the epoch is set by the batch sampler (EpochBatchSampler) before each pass, before workers start.
    """

    def __init__(self, cached, augment=None, seed: int = 0):
        self.pixels, self.labels = pixel_arrays(cached)
        self.augment, self.seed, self.epoch = augment, seed, 0

    def __len__(self):
        return len(self.labels)

    def __getitems__(self, indices):
        import numpy as np
        import torch
        from PIL import Image

        indices = [int(i) for i in indices]
        pixels = self.pixels[indices]["pixels"]
        if self.augment is not None:
            out = np.empty_like(pixels)
            for j, (index, array) in enumerate(zip(indices, pixels)):
                generator = torch.Generator().manual_seed(example_seed(self.seed, self.epoch, index))
                image = Image.fromarray(np.ascontiguousarray(array.transpose(1, 2, 0)))
                out[j] = np.asarray(self.augment(image, generator=generator)).transpose(2, 0, 1)
            pixels = out
        return {
            "pixel_values": torch.from_numpy(np.ascontiguousarray(pixels)),
            "labels": torch.from_numpy(self.labels[indices]),
        }

    def __getitem__(self, index):
        batch = self.__getitems__([index])
        return {k: v[0] for k, v in batch.items()}


def example_seed(seed: int, epoch: int, index: int) -> int:
    """One seed per (run seed, epoch, example): the same in every process and worker (no Python hash salt)."""
    return int.from_bytes(hashlib.sha1(f"{seed}/{epoch}/{index}".encode()).digest()[:7], "little")


class EpochBatchSampler:
    """Wraps a batch sampler; set_epoch also tells the dataset, so workers (started after it) augment for that epoch."""

    def __init__(self, batch_sampler, dataset: PixelBatches):
        self.batch_sampler, self.dataset = batch_sampler, dataset

    def set_epoch(self, epoch: int) -> None:
        self.dataset.epoch = epoch
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)

    def __iter__(self):
        return iter(self.batch_sampler)

    def __len__(self):
        return len(self.batch_sampler)


def _batch_as_is(batch):
    return batch  # PixelBatches.__getitems__ already returns the collated batch


def image_loaders(
    splits,
    processor,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    augment: bool = True,
    num_workers: Optional[int] = None,
) -> tuple[dict, list[str]]:
    """Train / validation / test loaders of uint8 pixel batches (see the module docstring), and notes for the run.

    Pair them with normalize_on_device(model, processor): the model gets uint8 and normalises it itself.
    """
    import torch
    from torch.utils.data import DataLoader

    workers = default_num_workers() if num_workers is None else num_workers
    loaders, hits = {}, []
    for name, split in splits.items():
        train = name == "train"
        pixels, hit = cached_pixels(split, processor)
        hits.append(hit)
        dataset = PixelBatches(pixels, RandomAffine() if (train and augment) else None, seed=seed)
        sampler = LengthGroupedBatchSampler(
            [1] * len(dataset), batch_size if train else eval_batch_size, seed=seed, shuffle=train
        )
        loaders[name] = DataLoader(
            dataset,
            batch_sampler=EpochBatchSampler(sampler, dataset),
            collate_fn=_batch_as_is,
            num_workers=workers if train else 0,
            pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(seed),
        )
    size = tuple(next(iter(loaders.values())).dataset.pixels[0]["pixels"].shape[1:])
    how = "read from the cache" if all(hits) else "decoded and resized once, cached"
    notes = [
        f"images {how} at {size[0]}x{size[1]} ({cache_root()}); augmentation in "
        f"{workers or 'no'} worker process(es); normalisation on the device"
    ]
    return loaders, notes


class PixelNormalizer:
    """uint8 pixels -> (x * rescale_factor - mean) / std in float32, with the processor's numbers, on the pixels'
    device.

    The one place this arithmetic lives: training's forward hook (`normalize_on_device`) and the verbs that feed
    a saved model the cached uint8 batches (finetune.tasks.runs) both call it.
    """

    def __init__(self, processor):
        import torch

        self.mean = torch.tensor(processor.image_mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(processor.image_std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = float(getattr(processor, "rescale_factor", 1 / 255))

    def __call__(self, pixels):
        device = pixels.device
        return (pixels.float() * self.scale - self.mean.to(device)) / self.std.to(device)


def normalize_on_device(model, processor):
    """A forward pre-hook: uint8 pixel_values -> PixelNormalizer's float32, on the batch's own device.

    Float pixel_values (from the processor, e.g. in `finetune predict`) pass untouched. Returns the hook handle.
    """
    import torch

    normalize = PixelNormalizer(processor)

    def hook(module, args, kwargs):
        pixels = kwargs.get("pixel_values")
        if pixels is None or pixels.dtype != torch.uint8:
            return None
        return args, {**kwargs, "pixel_values": normalize(pixels)}

    return model.register_forward_pre_hook(hook, with_kwargs=True)
