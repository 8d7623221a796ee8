"""The ready Accelerate config files (configs/accelerate/) load with Accelerate's own loader and say what their
names promise; `accelerate launch` accepts each (its argument validation, no processes started).

DeepSpeed is not installed here: the loader and the launch validation still read the DeepSpeed files, which is
what this checks; running them needs a GPU machine with `pip install deepspeed`.
"""

from pathlib import Path

import pytest

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"
EXPECTED = {
    # file: (distributed_type, num_processes, mixed_precision, extra checks on the loaded ClusterConfig)
    "single_gpu_bf16.yaml": ("NO", 1, "bf16", lambda c: not c.use_cpu),
    "multi_gpu_ddp.yaml": ("MULTI_GPU", 2, "bf16", lambda c: c.gpu_ids == "all"),
    "fsdp.yaml": (
        "FSDP",
        2,
        "bf16",
        lambda c: c.fsdp_config["fsdp_version"] == 2 and c.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT",
    ),
    "deepspeed_zero2.yaml": ("DEEPSPEED", 2, "bf16", lambda c: c.deepspeed_config["zero_stage"] == 2),
    "deepspeed_zero3.yaml": (
        "DEEPSPEED",
        2,
        "bf16",
        lambda c: c.deepspeed_config["zero_stage"] == 3 and c.deepspeed_config["zero3_save_16bit_model"],
    ),
    "cpu_2proc.yaml": ("MULTI_GPU", 2, "no", lambda c: c.main_process_port == 29533),
    "multi_node.yaml": (
        "MULTI_GPU",
        16,
        "bf16",
        lambda c: c.machine_rank == 0 and c.rdzv_backend == "static" and c.main_process_ip and c.main_process_port,
    ),
}
MACHINES = {"multi_node.yaml": 2}  # every other file: one machine


def test_every_config_file_is_listed():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_loads_with_accelerates_loader(name):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    config = load_config_from_file(str(CONFIGS / name))
    distributed_type, processes, precision, extra = EXPECTED[name]
    assert isinstance(config, ClusterConfig)
    assert config.distributed_type.value == distributed_type
    assert config.num_processes == processes and config.num_machines == MACHINES.get(name, 1)
    assert str(config.mixed_precision) == precision
    assert extra(config)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_accelerate_launch_accepts_it(name):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(CONFIGS / name), "-m", "recipes.sentiment"])
    args, _, _ = _validate_launch_command(args)
    distributed_type = EXPECTED[name][0]
    assert args.use_deepspeed == (distributed_type == "DEEPSPEED")
    assert args.use_fsdp == (distributed_type == "FSDP")
    assert args.multi_gpu == (distributed_type == "MULTI_GPU")
    assert args.num_processes == EXPECTED[name][1] and args.module
    if distributed_type == "DEEPSPEED":
        assert args.zero_stage == (2 if "zero2" in name else 3)


def test_the_docs_give_the_command_for_each():
    doc = (CONFIGS.parents[1] / "docs" / "scaling.md").read_text()
    for name in EXPECTED:
        assert f"--config_file configs/accelerate/{name}" in doc, name
