"""The plan of the house (issue 23): one source of defaults, one task registry that every consumer reads.

The layers themselves are checked by import-linter and the style by ruff, both run by `make test` (pyproject.toml).
"""

import dataclasses
import json

import pytest

from finetune import cli
from finetune.commands import search, study
from finetune.core.config import parse_config
from finetune.tasks import registry
from finetune.tasks.runs import open_run


@pytest.mark.parametrize("name", registry.names())
def test_python_and_the_command_line_start_from_the_same_values(name, tmp_path):
    config_cls = registry.get(name).config_cls
    from_python = config_cls(output_dir=str(tmp_path))
    from_cli = parse_config(config_cls, ["--output_dir", str(tmp_path)])
    assert dataclasses.asdict(from_python) == dataclasses.asdict(from_cli)


def test_the_defaults_are_the_tasks_yaml():
    import yaml

    from recipes.sentiment import SentimentConfig

    written = yaml.safe_load(SentimentConfig.defaults_yaml.read_text())
    config = SentimentConfig()
    assert config.learning_rate == 1e-4 == float(written["learning_rate"])
    assert (config.max_train_samples, config.eval_steps, config.output_dir) == (12000, 100, "runs/sentiment")


@pytest.fixture
def tiny_task():
    task = registry.register(
        registry.Task("tiny_task", "tiny_task_recipe", "TinyTaskConfig", "text-classification", "accuracy")
    )
    yield task
    del registry.TASKS["tiny_task"]


def tiny_flags(tiny_bert_dir, tweets_small_csv, out):
    return [
        "--model",
        str(tiny_bert_dir),
        "--dataset",
        str(tweets_small_csv),
        "--max_length",
        "32",
        "--max_train_samples",
        "64",
        "--max_eval_samples",
        "64",
        "--batch_size",
        "16",
        "--mixed_precision",
        "no",
        "--scratch_layers",
        "1",
        "--scratch_d_model",
        "32",
        "--output_dir",
        str(out),
    ]


def test_one_registry_entry_makes_a_task_known_to_the_cli_search_study_and_runs(
    tiny_task, tiny_bert_dir, tweets_small_csv, tmp_path, capsys
):
    assert "tiny_task" in registry.names()
    # The CLI trains it, and the run it wrote is opened as that task's.
    run_dir = tmp_path / "train"
    assert (
        cli.main(["train", "tiny_task", *tiny_flags(tiny_bert_dir, tweets_small_csv, run_dir), "--compare", "false"])
        == 0
    )
    assert json.loads((run_dir / "results.json").read_text())["task"] == "tiny_task"
    assert open_run(run_dir).task is tiny_task
    # Search and study find it by the same name.
    space = tmp_path / "space.yaml"
    space.write_text("learning_rate: {type: categorical, choices: [1.0e-3]}\nnum_epochs: 1\n")
    assert (
        search.main(
            [
                "tiny_task",
                "--n_trials",
                "1",
                "--space",
                str(space),
                "--compare",
                "false",
                *tiny_flags(tiny_bert_dir, tweets_small_csv, tmp_path / "search"),
            ]
        )
        == 0
    )
    assert study.load_recipe("tiny_task")[1] is tiny_task.config_cls
    # And an unknown name is the same one line everywhere, listing the registered tasks.
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli.main(["train", "no_such_task"])
    assert exited.value.code == 2 and "tiny_task" in capsys.readouterr().err


def test_every_image_the_docs_show_is_in_git():
    """README and docs/ embed PNGs from docs/figures/ (made by `make figures`): committed, so they render on a fresh
    clone and on the Hub."""
    import re
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tracked = set(
        subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout.split()
    )
    shown = []
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+\.png)\)", doc.read_text()):
            shown.append((doc.parent / target).resolve().relative_to(root).as_posix())
    assert shown and all(path in tracked for path in shown), sorted(set(shown) - tracked)


def test_installing_by_hand_installs_what_the_makefile_installs():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    makefile = re.search(r"^ASSETS := (.+)$", (root / "Makefile").read_text(), re.M).group(1).split()
    readme = (root / "README.md").read_text()
    block = readme[readme.index("## Installing by hand") :]
    block = block[: block.index("```", block.index("```") + 3)]
    assert all(spec in block for spec in makefile), [spec for spec in makefile if spec not in block]


# ---- no import cycles, and the light verbs stay light ------------------------------------------------------------


def test_no_module_imports_itself_through_others():
    """0 cycles in the whole import graph (imports inside functions included): a module that imports something
    which leads back to it would be hidden by a lazy import until the day the order changes."""
    import grimp

    graph = grimp.build_graph("finetune", "recipes")

    def leads_back(module):
        seen, todo = set(), list(graph.find_modules_directly_imported_by(module))
        while todo:
            current = todo.pop()
            if current == module:
                return True
            if current not in seen:
                seen.add(current)
                todo.extend(graph.find_modules_directly_imported_by(current))
        return False

    assert [module for module in sorted(graph.modules) if leads_back(module)] == []


LIGHT = """
import sys
from finetune import cli
cli.main(["--help"])
import finetune.commands.clean, finetune.commands.compare, finetune.commands.merge, finetune.commands.push
print(sorted(m for m in ("torch", "transformers", "datasets", "finetune.data.text") if m in sys.modules))
"""


def test_help_and_the_verbs_that_read_run_directories_import_no_torch():
    """`finetune --help` answers at once, and compare / clean / merge / push read a run directory without torch."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]"


def test_the_packaged_names_are_the_loaders_tables():
    from finetune.data import images, packaged, pairs, qa, text, tokens

    tables = set(text.PACKAGED_TEXT) | set(images.PACKAGED_IMAGES) | set(tokens.PACKAGED_NER) | set(qa.PACKAGED_QA)
    tables |= set(pairs.PACKAGED_PAIRS)
    assert tables == packaged.NAMES
