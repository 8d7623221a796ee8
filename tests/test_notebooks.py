"""Every teaching notebook (notebooks/*.py, jupytext percent format) runs top to bottom in a real Jupyter
kernel, on tiny settings (NOTEBOOK_TINY=1, a tiny BERT, 1,000 tweets), and fails on any error in any cell."""

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.py"))


def test_there_is_a_notebook_per_lesson():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06"]


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch, tiny_bert_dir, tweets_small_csv):
    import jupytext
    from nbclient import NotebookClient

    notebook = jupytext.read(path)
    assert all(not cell.get("outputs") for cell in notebook.cells)  # text in git, never outputs
    # The kernel inherits this environment: tiny settings, offline, and this checkout on PYTHONPATH.
    for name, value in {
        "NOTEBOOK_TINY": "1",
        "NOTEBOOK_MODEL": str(tiny_bert_dir),
        "NOTEBOOK_DATASET": str(tweets_small_csv),
        "NOTEBOOK_OUTPUT": str(tmp_path / "runs"),
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",  # as in Jupyter (conftest sets Agg)
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parent.parent), os.environ.get("PYTHONPATH")])),
    }.items():
        monkeypatch.setenv(name, value)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on the first failing cell
    produced = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {}) for o in produced), (
        "every notebook shows at least one figure inline"
    )
