"""The loopback Hub serves dataset repositories to the real `datasets` client, so the Hub code path is run, not assumed.

Each load runs in a child process: HF_HUB_OFFLINE is read when the Hugging Face libraries are imported, and the
suite itself runs offline. The child points HF_ENDPOINT at the fake Hub and uses a private HF_HOME cache.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hub_server import FakeHub

ROOT = Path(__file__).resolve().parents[1]

PAIRS_CSV = "sentence1,sentence2,label,idx\nThe cat sat.,A cat sat down.,1,0\nIt rained.,The sun shone.,0,1\n"
GLUE_CARD = """---
configs:
- config_name: mrpc
  data_files:
  - split: train
    path: mrpc/train-*
  - split: validation
    path: mrpc/validation-*
---
# a GLUE-shaped test repository
"""

LOAD = """
import json, sys
from finetune.data.sources import load_hub_dataset
name, config = sys.argv[1], (sys.argv[2] or None)
data = load_hub_dataset(name, config)
print(json.dumps({split: {"columns": ds.column_names, "rows": ds.to_list()} for split, ds in data.items()}))
"""


def online_env(hub_url: str, home: Path) -> dict:
    """The environment of a child that talks to the fake Hub (and nothing else)."""
    env = dict(
        os.environ,
        HF_ENDPOINT=hub_url,
        HF_HUB_OFFLINE="0",
        HF_DATASETS_OFFLINE="0",
        HF_HOME=str(home),
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    env.pop("HF_TOKEN", None)
    return env


def load_in_child(hub_url: str, home: Path, name: str, config: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", LOAD, name, config],
        env=online_env(hub_url, home),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def hub():
    with FakeHub(lifetime=120) as server:
        yield server


def test_a_config_of_a_hub_dataset_loads_through_the_datasets_client(hub, tmp_path):
    hub.add_dataset(
        "nyu-mll/glue",
        {
            "README.md": GLUE_CARD,
            "mrpc/train-00000-of-00001.csv": PAIRS_CSV,
            "mrpc/validation-00000-of-00001.csv": PAIRS_CSV,
        },
    )
    proc = load_in_child(hub.url, tmp_path / "home", "nyu-mll/glue", "mrpc")
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert sorted(loaded) == ["train", "validation"]
    assert loaded["train"]["columns"] == ["sentence1", "sentence2", "label", "idx"]
    assert loaded["train"]["rows"][0] == {
        "sentence1": "The cat sat.",
        "sentence2": "A cat sat down.",
        "label": 1,
        "idx": 0,
    }
    # The files really came over HTTP from the fake Hub.
    assert hub.requests_to(r"^/datasets/nyu-mll/glue/resolve/.+/mrpc/train-00000-of-00001\.csv$")


def test_a_dataset_missing_from_the_hub_is_one_line(hub, tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "finetune.cli",
            "train",
            "sentiment",
            "--dataset",
            "nobody/nothing-here",
            "--output_dir",
            str(run_dir),
        ],
        env=online_env(hub.url, tmp_path / "home"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "nobody/nothing-here" in lines[0], proc.stderr[-2000:]
    assert not run_dir.exists()
