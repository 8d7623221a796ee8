"""--torch_compile: the engine compiles the model in place (same module, same state_dict keys), trains it, and the
result matches an uncompiled run. Dynamo's "eager" backend stands in for inductor: the same graph capture and
guards, without minutes of C++ compilation."""

from types import SimpleNamespace

import pytest
import torch

from finetune.core import engine
from finetune.core.config import TrainingConfig
from finetune.core.errors import UserError


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 2)

    def forward(self, x, labels):
        logits = self.layer(x)
        return SimpleNamespace(loss=torch.nn.functional.cross_entropy(logits, labels), logits=logits)


def loaders():
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(0))
    rows = [{"x": x[i], "labels": int(x[i, 0] > 0)} for i in range(16)]
    collate = lambda b: {"x": torch.stack([r["x"] for r in b]), "labels": torch.tensor([r["labels"] for r in b])}  # noqa: E731
    return {"train": torch.utils.data.DataLoader(rows, batch_size=4, collate_fn=collate)}


def test_torch_compile_trains_the_compiled_module_with_unchanged_weights_and_keys(tmp_path, monkeypatch):
    compiled = []
    original = torch.nn.Module.compile

    def eager_compile(self, *args, **kwargs):
        compiled.append(type(self).__name__)
        return original(self, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", eager_compile)
    config = dict(num_epochs=2, learning_rate=0.1, warmup_ratio=0.0, mixed_precision="no")
    plain = engine.train(
        Net(), loaders(), None, TrainingConfig(output_dir=str(tmp_path / "a"), **config), tmp_path / "a", "net"
    )
    assert compiled == []
    fast = engine.train(
        Net(),
        loaders(),
        None,
        TrainingConfig(output_dir=str(tmp_path / "b"), torch_compile=True, **config),
        tmp_path / "b",
        "net",
    )
    assert compiled == ["Net"] and fast.model._compiled_call_impl is not None
    assert list(fast.model.state_dict()) == list(plain.model.state_dict()) == ["layer.weight", "layer.bias"]
    for key, value in plain.model.state_dict().items():
        torch.testing.assert_close(fast.model.state_dict()[key], value)


def test_num_workers_must_not_be_negative():
    with pytest.raises(UserError, match="--num_workers must be 0 or more"):
        TrainingConfig(num_workers=-1)
