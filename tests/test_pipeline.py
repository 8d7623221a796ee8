"""Input pipelines: images decoded and resized once into a cache (a second run reads it, identical pixels),
augmentation by (seed, epoch, index) whatever the workers, normalisation on the device equal to the processor's."""

import io

import numpy as np
import pytest
import torch

from finetune.data import cache, pipeline


def image_split(n=10, seed=0, modes=("RGB", "L", "RGBA", "P")):
    """n small PNGs of assorted sizes and modes, as the image recipes hold them (undecoded Image feature)."""
    from datasets import ClassLabel, Dataset, Features, Image
    from PIL import Image as PILImage

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        mode = modes[i % len(modes)]
        size = (20 + 3 * i, 24 + i)
        rgb = PILImage.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        image = rgb.convert(mode) if mode != "RGBA" else rgb.convert("RGBA")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        rows.append({"image": {"bytes": buffer.getvalue(), "path": None}, "label": i % 3})
    features = Features({"image": Image(decode=False), "label": ClassLabel(names=["a", "b", "c"])})
    return Dataset.from_list(rows, features=features)


@pytest.fixture
def processor():
    from transformers import ViTImageProcessorPil

    return ViTImageProcessorPil(
        size={"height": 16, "width": 16}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3]
    )


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_PIPELINE_CACHE", str(tmp_path / "cache"))


def test_second_run_reads_the_cache_and_gets_identical_pixels(processor, monkeypatch):
    split = image_split()
    cached, hit = pipeline.cached_pixels(split, processor)
    assert hit is False
    first, labels = pipeline.pixel_arrays(cached)
    assert first[:]["pixels"].dtype == np.uint8 and first[:]["pixels"].shape == (10, 3, 16, 16)
    assert list(labels) == list(split["label"])

    # The second run must not decode a single image: make decoding fail, and read the cache.
    from finetune.data import images

    monkeypatch.setattr(images, "open_image", lambda *a, **k: pytest.fail("decoded again instead of reading the cache"))
    cached_again, hit = pipeline.cached_pixels(image_split(), processor)
    assert hit is True
    again, labels_again = pipeline.pixel_arrays(cached_again)
    assert np.array_equal(first[:]["pixels"], again[:]["pixels"]) and np.array_equal(labels, labels_again)


def test_cache_key_follows_the_images_and_the_resize(processor):
    from transformers import ViTImageProcessorPil

    pipeline.cached_pixels(image_split(), processor)
    assert pipeline.cached_pixels(image_split(seed=1), processor)[1] is False  # other pixels
    bigger = ViTImageProcessorPil(size={"height": 24, "width": 24})
    pixels, hit = pipeline.cached_pixels(image_split(), bigger)
    assert hit is False and pipeline.pixel_arrays(pixels)[0][0]["pixels"].shape == (3, 24, 24)
    # Normalisation is not part of the cache: another mean / std reads the same entry.
    other_norm = ViTImageProcessorPil(size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    assert pipeline.cached_pixels(image_split(), other_norm)[1] is True


def test_normalisation_on_the_device_equals_the_processors_own(processor):
    """Independent truth: the processor's full output (decode, RGB, resize, rescale, normalise) in one call."""
    from finetune.data.images import open_image, to_rgb

    split = image_split()
    pixels = pipeline.pixel_arrays(pipeline.cached_pixels(split, processor)[0])[0][:]
    expected = processor(images=[to_rgb(open_image(v)) for v in split["image"]], return_tensors="pt")["pixel_values"]

    seen = []
    model = torch.nn.Module()
    model.forward = lambda pixel_values: seen.append(pixel_values)
    handle = pipeline.normalize_on_device(model, processor)
    model(pixel_values=torch.from_numpy(pixels["pixels"]))
    assert seen[0].dtype == torch.float32
    torch.testing.assert_close(seen[0], expected, atol=1e-5, rtol=0)
    model(pixel_values=expected)  # float input (finetune predict's path) passes untouched
    assert seen[1] is expected
    handle.remove()


def batches(loader, epoch):
    from finetune.core.engine import set_epoch

    set_epoch(loader, epoch)
    return [(b["pixel_values"].clone(), b["labels"].clone()) for b in loader]


def test_augmentation_depends_on_seed_epoch_index_not_on_workers(processor):
    split = image_split(n=12)
    no_workers, _ = pipeline.image_loaders({"train": split}, processor, 4, 4, seed=3, num_workers=0)
    two_workers, notes = pipeline.image_loaders({"train": split}, processor, 4, 4, seed=3, num_workers=2)
    assert "2 worker process(es)" in notes[0] and "read from the cache" in notes[0]
    for epoch in (0, 1):
        a, b = batches(no_workers["train"], epoch), batches(two_workers["train"], epoch)
        assert len(a) == 3
        for (xa, ya), (xb, yb) in zip(a, b):
            assert xa.dtype == torch.uint8 and torch.equal(xa, xb) and torch.equal(ya, yb)
    epoch0, epoch1 = batches(no_workers["train"], 0), batches(no_workers["train"], 1)
    assert not all(torch.equal(x0, x1) for (x0, _), (x1, _) in zip(epoch0, epoch1))  # a new draw each epoch
    # Augmented, yet the same images: on average close to the unaugmented pixels.
    plain = pipeline.pixel_arrays(pipeline.cached_pixels(split, processor)[0])[0][:]["pixels"]
    assert not torch.equal(epoch0[0][0], torch.from_numpy(plain[:4]))


def test_evaluation_batches_are_the_cached_pixels_in_order(processor):
    split = image_split(n=7)
    loaders, _ = pipeline.image_loaders({"train": split, "test": split}, processor, 4, 5, seed=0, num_workers=0)
    plain = pipeline.pixel_arrays(pipeline.cached_pixels(split, processor)[0])[0][:]["pixels"]
    test = batches(loaders["test"], 0)
    assert [len(y) for _, y in test] == [5, 2]
    assert torch.equal(torch.cat([x for x, _ in test]), torch.from_numpy(plain))


@pytest.mark.parametrize("cores, expected", [(1, 0), (2, 0), (4, 3), (64, 8)])
def test_default_workers_follow_the_cores(monkeypatch, cores, expected):
    monkeypatch.setattr(pipeline.os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert pipeline.default_num_workers() == expected


def test_text_is_tokenized_once_then_read_from_the_cache(tiny_bert_dir, monkeypatch):
    from datasets import Dataset, DatasetDict
    from transformers import AutoTokenizer

    from finetune.data.text import tokenize

    splits = DatasetDict(
        {
            name: Dataset.from_dict(
                {
                    "text": [f"{name} text number {i} " * (i % 4 + 1) for i in range(9)],
                    "label": [i % 2 for i in range(9)],
                }
            )
            for name in ("train", "test")
        }
    )
    hits = []
    real = cache.cached_map

    def recording(*args, **kwargs):
        dataset, hit = real(*args, **kwargs)
        hits.append(hit)
        return dataset, hit

    monkeypatch.setattr(cache, "cached_map", recording)
    first = tokenize(splits, AutoTokenizer.from_pretrained(tiny_bert_dir), 8)
    again = tokenize(splits, AutoTokenizer.from_pretrained(tiny_bert_dir), 8)  # a fresh tokenizer, as in a new run
    assert hits == [False, False, True, True]
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    for name in ("train", "test"):
        assert first[name].to_dict() == again[name].to_dict()
        # Independent truth: the tokenizer called directly.
        assert (
            list(first[name]["input_ids"])
            == tokenizer(list(splits[name]["text"]), truncation=True, max_length=8)["input_ids"]
        )
        assert list(first[name]["labels"]) == list(splits[name]["label"])
    # another max_length
    assert list(tokenize(splits, tokenizer, 6)["train"]["length"]) != list(first["train"]["length"])
    assert hits[-2:] == [False, False]
