"""finetune demo end to end: the app starts on a free loopback port in its own process, a real headless Chromium
(Debian's chromium, driven by Playwright) types a sentence and reads the label and the attention heatmap from
the page, gradio_client calls the same app, and the server is stopped. Truth: `finetune predict` on the text."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from finetune.commands import demo, predict

CHROMIUM = os.environ.get("FINETUNE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TEXT = "worst delay ever, they lost my bag"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(sentiment_run):
    """`finetune demo RUN_DIR --port P` in a subprocess, until its page answers; stopped after the module."""
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "NO_PROXY": "127.0.0.1,localhost"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "finetune.cli", "demo", str(sentiment_run), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the demo did not come up: {proc.stdout.read()[-3000:]}")
        time.sleep(0.5)
    yield url, port
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.returncode is not None  # stopped: nothing left listening
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=2)


@pytest.fixture(scope="module")
def expected_label(sentiment_run):
    from finetune.tasks.runs import open_run

    run = open_run(sentiment_run, attentions=True)  # as the app loads it
    labels, _ = demo.classify_text(run, TEXT)
    return max(labels, key=labels.get)


def test_predict_agrees_with_the_demo_function(sentiment_run, expected_label, capsys):
    assert predict.main([str(sentiment_run), TEXT]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == expected_label


@pytest.mark.slow
def test_a_real_browser_types_a_sentence_and_reads_label_and_heatmap(server, expected_label):
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which("chromium")):
        pytest.skip(f"no Chromium at {CHROMIUM}: `make browser` (apt-get install chromium) installs it")
    url, _ = server
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium"),
            args=CHROMIUM_ARGS,
            headless=True,
        )
        try:
            page = browser.new_page()
            page.goto(url, wait_until="domcontentloaded")
            page.locator("#input-text textarea").fill(TEXT)
            page.locator("#classify-button").click()
            label = page.locator("#label-pretrained")
            label.get_by_text(expected_label).first.wait_for(timeout=60_000)
            # the top class is shown as the Label's heading; both models' panels are on the page
            assert expected_label in label.inner_text()
            heatmap = page.locator("#attention-pretrained img")
            heatmap.wait_for(state="visible", timeout=60_000)
            assert heatmap.evaluate("img => img.naturalWidth") > 100
            assert page.locator("#label-scratch").inner_text().strip()  # the scratch model answered beside it
            assert page.locator("#attention-scratch img").count() == 1
        finally:
            browser.close()


@pytest.mark.slow
def test_gradio_client_calls_the_same_app(server, expected_label):
    from gradio_client import Client

    url, _ = server
    client = Client(url, verbose=False)
    pretrained_label, pretrained_heatmap, scratch_label, _ = client.predict(TEXT, -1, 0, api_name="/classify")
    assert pretrained_label["label"] == expected_label
    assert {c["label"] for c in pretrained_label["confidences"]} == {"negative", "positive"}
    assert os.path.getsize(pretrained_heatmap) > 1_000  # the heatmap came back as an image file
    assert scratch_label["label"] in ("negative", "positive")


def test_port_in_use_is_one_line_exit_2(sentiment_run, capsys):
    from test_evaluate_predict import error_lines

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(SystemExit) as exit_info:
            demo.main([str(sentiment_run), "--port", str(busy.getsockname()[1])])
    assert exit_info.value.code == 2
    err = error_lines(capsys.readouterr().err)
    assert len(err) == 1 and "in use" in err[0]


def test_missing_run_and_wrong_kind_are_one_line_exit_2(tmp_path, capsys):
    from test_evaluate_predict import error_lines

    for args in ([str(tmp_path / "absent"), "--port", str(free_port())], [str(tmp_path), "--port", str(free_port())]):
        with pytest.raises(SystemExit) as exit_info:
            demo.main(args)
        assert exit_info.value.code == 2
        assert len(error_lines(capsys.readouterr().err)) == 1


def test_heatmap_is_the_models_own_attention(sentiment_run):
    """The drawn matrix is the last layer's mean attention: rows sum to 1 and match BERT's eager attention."""
    import torch

    from finetune.tasks.runs import open_run

    run = open_run(sentiment_run, attentions=True)
    encoded = run.processor(TEXT, return_tensors="pt")
    with torch.no_grad():
        attentions = run.model(**encoded, output_attentions=True).attentions
    assert attentions is not None and len(attentions) == run.model.config.num_hidden_layers
    rows = attentions[-1][0].mean(0).sum(-1)
    assert torch.allclose(rows, torch.ones_like(rows), atol=1e-5)
    image = demo.attention_heatmap(attentions, run.processor.convert_ids_to_tokens(encoded["input_ids"][0]), -1, 0)
    assert image.ndim == 3 and image.shape[2] == 3 and image.std() > 0
