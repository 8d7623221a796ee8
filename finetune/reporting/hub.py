"""Share a finished run on the Hugging Face Hub: choose the files, push them, and say what went wrong.

    finetune push RUN_DIR --repo_id NAME [--private] [--hub_endpoint URL] [--token T]
                          [--what auto|model|adapter|merged] [--include_scratch] [--keep_card]
    python -m finetune.reporting.hub RUN_DIR --repo_id NAME ...            (the same, without the dispatcher)

`push_run` rewrites the model card with the repo id (finetune/reporting/card.py; training already wrote it), then
uploads
an allow-list of files (`select_files`) with `HfApi.create_repo(exist_ok=True)` + `upload_folder`.
`write_model_card` / `build_model_card` stay importable from here as aliases of finetune.reporting.card's.

Every failure the user can fix (no token, refused token, no write access, bad repo id, unreachable endpoint,
a connection lost mid-upload) becomes one `UserError` line naming the fix (`_user_error`). Nothing in the run
directory is deleted or moved by a push, and running the same command again retries it.

Importing this module is cheap: huggingface_hub is imported inside the functions that need it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from finetune.core.errors import UserError
from finetune.core.run_directory import refuse_unfinished
from finetune.core.secrets import is_secret_name
from finetune.reporting.card import flatten, load_run, public_record, write_model_card

PROBE_TIMEOUT_S = 10.0  # how long to wait for the endpoint to answer before calling it unreachable

# What a push may upload. Everything else in the run directory (checkpoints/, logs/, optimizer states, stray
# files) stays local: an allow-list never publishes something by accident.
WEIGHT_PATTERNS = ("model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json")
MODEL_CONFIG_FILES = ("config.json", "generation_config.json")
PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
    "chat_template.json",
    "preprocessor_config.json",
    "image_processor_config.json",
    "processor_config.json",
)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
RUN_FILES = ("README.md", "results.json", "config.yaml")  # plus every top-level *.png (learning_curves.png)
# Records that name where the run lived (output_dir, a local --model or --dataset, a LoRA adapter's base model
# folder): pushed with every absolute or home path cut to its last part, as the card does; the run dir keeps them.
LOCAL_RECORDS = ("results.json", "config.yaml", "adapter_config.json")
WHAT_CHOICES = ("auto", "model", "adapter", "merged")


# ------------------------------------------------------------------------------------------------ what to push
def _weights(folder: Path) -> list[Path]:
    found = []
    for pattern in WEIGHT_PATTERNS:
        found += sorted(folder.glob(pattern))
    return found


def _has_model(folder: Path) -> bool:
    return (folder / "config.json").is_file() and bool(_weights(folder))


def _named(folder: Path, names) -> list[Path]:
    return [folder / name for name in names if (folder / name).is_file()]


def select_files(run_dir: str | os.PathLike, what: str = "auto", include_scratch: bool = False) -> dict[str, Path]:
    """{path in repo: local file} for a push. Raises UserError when the chosen model files are missing.

    what="model":   the fine-tuned model at the run's root (config.json + *.safetensors) and its processor files.
    what="adapter": the LoRA adapter (adapter_config.json + adapter_model.safetensors) and processor files.
    what="merged":  RUN_DIR/merged/ (a merged LoRA model) uploaded at the repo root.
    what="auto":    the root's model and/or adapter files, whichever exist; merged/ when the root has neither.
    Always: README.md, results.json, config.yaml, top-level *.png. Never: checkpoints/, logs/, merged/ (except
    for what="merged"), scratch/ (unless include_scratch: then under scratch/ in the repo).
    """
    run_dir = Path(run_dir)
    if what not in WHAT_CHOICES:
        raise UserError(f"--what must be one of {', '.join(WHAT_CHOICES)}, not {what!r}")
    has_model, has_adapter = _has_model(run_dir), all((run_dir / n).is_file() for n in ADAPTER_FILES)
    merged = run_dir / "merged"
    if what == "auto":
        if not (has_model or has_adapter):
            if not _has_model(merged):
                raise UserError(
                    f"no model in {run_dir}: expected config.json + model.safetensors (or a LoRA "
                    "adapter, or merged/); point to a finished run directory"
                )
            what = "merged"
    files: dict[str, Path] = {}
    if what == "merged":
        if not _has_model(merged):
            raise UserError(
                f"no merged model in {merged}: run `finetune merge {run_dir}` first, "
                "or push the adapter with --what adapter"
            )
        for path in _named(merged, MODEL_CONFIG_FILES) + _weights(merged):
            files[path.name] = path
        processor = _named(merged, PROCESSOR_FILES) or _named(run_dir, PROCESSOR_FILES)
        files.update({p.name: p for p in processor})
    else:
        if what in ("auto", "model") and has_model:
            files.update({p.name: p for p in _named(run_dir, MODEL_CONFIG_FILES) + _weights(run_dir)})
        elif what == "model":
            raise UserError(
                f"no full model in {run_dir} (config.json + model.safetensors): with --lora push "
                "--what adapter, or `finetune merge` and push --what merged"
            )
        if what in ("auto", "adapter") and has_adapter:
            files.update({p.name: p for p in _named(run_dir, ADAPTER_FILES)})
        elif what == "adapter":
            raise UserError(
                f"no LoRA adapter in {run_dir} (adapter_config.json + adapter_model.safetensors): "
                "the run was trained without --lora; push with --what model"
            )
        files.update({p.name: p for p in _named(run_dir, PROCESSOR_FILES)})
    files.update({p.name: p for p in _named(run_dir, RUN_FILES)})
    if "config.yaml" in files:
        _, config = load_run(run_dir) if (run_dir / "results.json").is_file() else ({}, {})
        secrets = [name for name, value in flatten(config) if is_secret_name(name) and value]
        if secrets:
            raise UserError(
                f"{run_dir / 'config.yaml'} holds a secret ({', '.join(secrets)}): it would be "
                "published with the run; remove that field from the file, then push again"
            )
    files.update({p.name: p for p in sorted(run_dir.glob("*.png")) if p.is_file()})
    if include_scratch:
        scratch = run_dir / "scratch"
        if not scratch.is_dir():
            raise UserError(
                f"--include_scratch: {scratch} does not exist (the run had no from-scratch model); drop the flag"
            )
        for path in sorted(scratch.rglob("*")):
            if path.is_file() and "checkpoints" not in path.relative_to(scratch).parts:
                files[f"scratch/{path.relative_to(scratch).as_posix()}"] = path
    return files


# ------------------------------------------------------------------------------------------------ errors
def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def _is_network_error(err: BaseException) -> bool:
    names = {cls.__name__ for cls in type(err).__mro__}
    return bool(
        names
        & {
            "TransportError",
            "TimeoutException",
            "NetworkError",
            "RemoteProtocolError",
            "ConnectError",
            "ConnectionError",
            "ProxyError",
            "ReadError",
            "WriteError",
        }
    )


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _user_error(err: BaseException, *, endpoint: str, repo_id: str, run_dir: Path, stage: str) -> UserError | None:
    """A one-line UserError for a huggingface_hub / network failure, or None when it is not one we know."""
    from huggingface_hub.errors import HfHubHTTPError

    retry = f"the local run directory {run_dir} is untouched; re-run the same command to retry"
    for cause in _chain(err):
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            status = cause.response.status_code
            server = cause.server_message or cause.response.headers.get("X-Error-Message") or ""
            server = f": {_short(Exception(server))}" if server else ""
            if status == 401:
                return UserError(
                    f"the Hub at {endpoint} refused the token (401 Unauthorized{server}); it is invalid, expired or "
                    f"revoked: create a write token at {endpoint}/settings/tokens, then `hf auth login` or export "
                    f"HF_TOKEN, and re-run"
                )
            if status == 403:
                namespace = repo_id.split("/")[0] if "/" in repo_id else "your namespace"
                return UserError(
                    f"the token may not write to '{namespace}' on {endpoint} (403 Forbidden{server}): use a token "
                    f"with write access to it (fine-grained tokens need write permission on that namespace), or "
                    f"choose --repo_id YOUR_NAME/{repo_id.split('/')[-1]}"
                )
            if status == 404:
                return UserError(
                    f"repository {repo_id} was not found on {endpoint} while {stage} (404{server}): "
                    f"check --repo_id and that the token can see it; {retry}"
                )
            if status in (400, 422) and stage == "creating the repository":
                return UserError(
                    f"the Hub rejected the repo id '{repo_id}' ({status}{server}): use NAME or "
                    "NAMESPACE/NAME with letters, digits, '-', '_', '.'"
                )
            return UserError(f"the Hub at {endpoint} answered {status}{server} while {stage}; {retry} later")
        if isinstance(cause, ValueError) and "metadata in README.md" in str(cause):
            return UserError(
                f"the Hub rejected the model card's metadata ({_short(cause)}): fix RUN_DIR/README.md, "
                "or push without --keep_card to regenerate it"
            )
        if _is_network_error(cause) or isinstance(cause, (ConnectionError, TimeoutError)):
            if stage == "contacting the Hub":
                return UserError(
                    f"cannot reach the Hub at {endpoint} ({type(cause).__name__}: {_short(cause)}): check the "
                    f"network, proxy or --hub_endpoint / HF_ENDPOINT; nothing was uploaded, re-run when it is "
                    f"reachable"
                )
            return UserError(
                f"the connection to {endpoint} failed while {stage} ({type(cause).__name__}: "
                f"{_short(cause)}); {retry} (files already on the Hub are not sent again)"
            )
    return None


# ------------------------------------------------------------------------------------------------ push
def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise UserError(
            f"invalid --repo_id {repo_id!r} ({_short(err)}): use NAME or NAMESPACE/NAME, e.g. "
            "--repo_id alice/minilm-tweets"
        )


def _push_in_child(
    run_dir: Path,
    repo_id: str,
    private: bool,
    endpoint: str | None,
    token: str | None,
    what: str,
    include_scratch: bool,
    keep_card: bool,
) -> str:
    """Run the push in a fresh interpreter with HF_HUB_OFFLINE=0 (huggingface_hub reads the flag at import)."""
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "0"
    env.pop("TRANSFORMERS_OFFLINE", None)
    if token:
        env["HF_TOKEN"] = token  # through the environment, not argv: argv shows in `ps`
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding finetune/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "finetune.commands.push", str(run_dir), "--repo_id", repo_id, "--what", what]
    if private:
        cmd.append("--private")
    if endpoint:
        cmd += ["--hub_endpoint", endpoint]
        env["HF_ENDPOINT"] = endpoint  # the client's own side requests go there too
    if include_scratch:
        cmd.append("--include_scratch")
    if keep_card:
        cmd.append("--keep_card")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines(keepends=True):
        if not line.startswith("pushed "):  # the caller reports the push itself
            sys.stdout.write(line)
    errors = [line[len("error: ") :] for line in proc.stderr.splitlines() if line.startswith("error: ")]
    if proc.returncode != 0:
        if errors:
            raise UserError(errors[-1])
        sys.stderr.write(proc.stderr)
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(
            f"the push process failed (exit {proc.returncode}: {last}); the local run directory is "
            "untouched, re-run the same command to retry"
        )
    found = re.findall(r" to (\S+)\s*$", proc.stdout, flags=re.MULTILINE)
    return found[-1] if found else f"{endpoint or ''}/{repo_id}"


def _whoami(endpoint: str, token: str, fail) -> str | None:
    """The token's user name from `endpoint` (None if the endpoint does not say); `fail(err, stage)` maps errors."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    try:
        response = get_session().get(
            f"{endpoint}/api/whoami-v2", headers=build_hf_headers(token=token), timeout=PROBE_TIMEOUT_S
        )
    except Exception as err:
        fail(err, "contacting the Hub")
    if response.status_code == 401:
        try:
            hf_raise_for_status(response)
        except Exception as err:
            fail(err, "checking the token")
    if response.status_code != 200:
        return None
    try:
        return response.json().get("name")
    except ValueError:
        return None


def push_run(
    run_dir: str | os.PathLike,
    repo_id: str,
    private: bool = False,
    endpoint: str | None = None,
    token: str | None = None,
    what: str = "auto",
    include_scratch: bool = False,
    keep_card: bool = False,
    commit_message: str | None = None,
) -> str:
    """Push a finished run to the Hub; returns the repo URL.

    The token is `token`, else HF_TOKEN, else the one saved by `hf auth login`. The endpoint is `endpoint`, else
    HF_ENDPOINT, else https://huggingface.co. The card (README.md) is rewritten with the repo id first (unless
    keep_card), then the files of `select_files(run_dir, what, include_scratch)` are uploaded in one
    `upload_folder` call. `private` applies when the repo is created; pushing a private run into an existing public
    repo is refused. When this process runs with HF_HUB_OFFLINE=1, the push runs in a child process without it
    (an explicit push is a request to go online).
    """
    run_dir = Path(run_dir)
    _check_repo_id(repo_id)
    refuse_unfinished(run_dir, "pushing it")
    _, config = load_run(run_dir)
    select_files(run_dir, what, include_scratch)  # fail on missing files before touching anything

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return _push_in_child(run_dir, repo_id, private, endpoint, token, what, include_scratch, keep_card)

    from huggingface_hub import HfApi, get_token

    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    if not re.match(r"https?://[^/\s]+", endpoint):
        raise UserError(
            f"the Hub endpoint {endpoint!r} is not a URL: pass --hub_endpoint / HF_ENDPOINT like https://huggingface.co"
        )
    token = token or get_token()
    if not token:
        raise UserError(
            f"no Hugging Face token: run `hf auth login` or export HF_TOKEN=hf_... (a token with write "
            f"access, from {endpoint}/settings/tokens), or pass --token"
        )

    def fail(err: BaseException, stage: str):
        mapped = _user_error(err, endpoint=endpoint, repo_id=repo_id, run_dir=run_dir, stage=stage)
        if mapped is None:
            raise err
        raise mapped from err

    # 1. Is the endpoint there, and does it accept the token? A short timeout instead of hanging.
    user = _whoami(endpoint, token, fail)
    if "/" not in repo_id and user:
        repo_id = f"{user}/{repo_id}"

    # 2. The card, then the repo, then one upload of the allow-listed files.
    if not keep_card or not (run_dir / "README.md").is_file():
        write_model_card(run_dir, repo_id=repo_id, what=what)
    files = select_files(run_dir, what, include_scratch)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        repo_id = getattr(repo_url, "repo_id", None) or repo_id
        if private and not api.repo_info(repo_id, repo_type="model").private:
            raise UserError(
                f"{repo_id} already exists on {endpoint} and is public, but --private was asked: make "
                "it private in the repo's settings on the Hub, or choose another --repo_id"
            )
    except UserError:
        raise
    except Exception as err:
        fail(err, "creating the repository")

    with tempfile.TemporaryDirectory(prefix="finetune-push-") as staging:
        # A staging folder of links: the repo layout (merged/ at the root, scratch/ only if asked) without
        # copying the weights and without writing anything into the run directory.
        for name, source in files.items():
            target = Path(staging, name)
            target.parent.mkdir(parents=True, exist_ok=True)
            if Path(name).name in LOCAL_RECORDS:
                text = source.read_text(encoding="utf-8")
                target.write_text(public_record(Path(name).name, text, config.get("model")), encoding="utf-8")
                continue
            try:
                os.symlink(source.resolve(), target)
            except OSError:
                import shutil

                shutil.copy2(source, target)
        try:
            api.upload_folder(
                repo_id=repo_id,
                folder_path=staging,
                repo_type="model",
                commit_message=commit_message or f"Upload {run_dir.resolve().name} with finetune",
            )
        except Exception as err:
            fail(err, "uploading")
    return f"{endpoint}/{repo_id}"


# ------------------------------------------------------------------------------------------------ CLI
