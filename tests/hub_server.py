"""A small fake Hugging Face Hub for offline tests: stdlib `http.server` on 127.0.0.1, state in memory.

It speaks the part of the Hub HTTP API that the real `huggingface_hub` client (2.x) uses to push a folder and
that `hf_hub_download` / `from_pretrained` use to read it back:

    GET  /api/whoami-v2                                  who owns the token (401 for an unknown token)
    GET  /api/agent-harnesses                            an empty registry (the client fetches it, best effort)
    POST /api/repos/create                               create_repo (409 when it exists, 403 for a read-only token)
    POST /api/validate-yaml                              README.md metadata check (legacy upload path)
    POST /api/models/{ns}/{name}/preupload/{rev}         upload mode per file: "regular" (or "lfs" above a size)
    POST /{ns}/{name}.git/info/lfs/objects/batch         LFS batch, "basic" transfer (only when lfs_threshold is set)
    PUT  /lfs-upload/{oid}                               the LFS object itself
    POST /api/models/{ns}/{name}/commit/{rev}            NDJSON commit: header, file (base64), lfsFile, deleted*
    GET  /api/models/{ns}/{name}[/revision/{rev}]        model info (sha, private, siblings)
    GET  /api/models/{ns}/{name}/tree/{rev}[/{path}]     file listing
    HEAD/GET /{ns}/{name}/resolve/{rev}/{path}           file content, with ETag, X-Repo-Commit, Content-Length

Dataset repositories (read-only, added by tests with `add_dataset`), for the real `datasets` client:
    GET  /api/datasets/{ns}/{name}[/revision/{rev}]      dataset info (sha, siblings, card data)
    GET  /api/datasets/{ns}/{name}/tree/{rev}[/{path}]   file listing
    POST /api/datasets/{ns}/{name}/paths-info/{rev}      info on the given paths
    HEAD/GET /datasets/{ns}/{name}/resolve/{rev}/{path}  file content

Xet is never advertised: preupload never answers a Xet mode and /resolve never sends `X-Xet-Hash`, so the client
uploads file contents inline in the commit (regular mode; base64 in the NDJSON) and downloads over plain HTTP.
(The client switches to Xet storage only for files the server marks "lfs", when `hf_xet` is installed.)

Knobs for error tests (set them on the `FakeHub` object while it runs; all are thread-safe enough for tests):
    tokens          {token: (user, "write" | "read")}; any other token is refused with 401
    drop_commits    drop the connection halfway through the body of the next N commit requests
    lfs_threshold   files at least this big are asked to go through LFS (None: everything is "regular")
The server stops by itself after `lifetime` seconds or `max_requests` requests, whichever comes first.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

WRITE_TOKEN = "hf_fake_write_token"
READ_TOKEN = "hf_fake_read_token"
USER = "tester"
DATASET_PREFIX = "datasets/"  # dataset repositories live beside model ones in FakeHub.repos under this prefix


def git_blob_sha1(data: bytes) -> str:
    """The oid git gives a blob (what the Hub reports for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Repo:
    def __init__(self, repo_id: str, private: bool):
        self.repo_id = repo_id
        self.private = private
        self.created = datetime.now(timezone.utc)
        first = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}
        self.commits: list[tuple[str, dict[str, bytes]]] = [(uuid.uuid4().hex + "00000000", first)]

    def head(self) -> tuple[str, dict[str, bytes]]:
        return self.commits[-1]

    def at(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        if revision in ("main", "refs/heads/main"):
            return self.head()
        for oid, files in self.commits:
            if oid == revision:
                return oid, files
        return None


class FakeHub:
    """The server's state and knobs; `start()` returns the endpoint URL (http://127.0.0.1:PORT)."""

    def __init__(self, lifetime: float = 300.0, max_requests: int = 5000):
        self.tokens: dict[str, tuple[str, str]] = {WRITE_TOKEN: (USER, "write"), READ_TOKEN: (USER, "read")}
        self.orgs: dict[str, list[str]] = {USER: ["test-org"]}
        self.drop_commits = 0
        self.lfs_threshold: int | None = None
        self.repos: dict[str, _Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.log: list[tuple[str, str, int]] = []  # (method, path, status)
        self.lifetime = lifetime
        self.max_requests = max_requests
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self.url = ""

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> str:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime, self.stop)  # never outlives a forgotten test
        self._timer.daemon = True
        self._timer.start()
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._timer is not None:
            self._timer.cancel()

    def __enter__(self) -> FakeHub:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---------------------------------------------------------------- helpers for tests
    def files(self, repo_id: str) -> dict[str, bytes]:
        return dict(self.repos[repo_id].head()[1])

    def add_dataset(self, repo_id: str, files: dict[str, bytes | str], private: bool = False) -> None:
        """Serve a dataset repository: {path in repo: content}, e.g. {"data/train.csv": "...", "README.md": "..."}."""
        repo = _Repo(repo_id, private)
        repo.commits = [
            (
                uuid.uuid4().hex + "00000000",
                {path: data.encode() if isinstance(data, str) else data for path, data in files.items()},
            )
        ]
        with self.lock:
            self.repos[DATASET_PREFIX + repo_id] = repo

    def requests_to(self, pattern: str) -> list[tuple[str, str, int]]:
        return [entry for entry in self.log if re.search(pattern, entry[1])]


class _HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


class _Dropped(Exception):
    """The handler closed the connection on purpose (simulated network failure)."""


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub
    protocol_version = "HTTP/1.1"  # keep-alive, as the client expects; every answer carries Content-Length

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    # ---------------------------------------------------------------- plumbing
    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        hub = self.hub
        self._body_read = False  # the handler object lives as long as the (keep-alive) connection
        split = urlsplit(self.path)
        path, self.query = unquote(split.path), parse_qs(split.query)
        with hub.lock:
            over_budget = len(hub.log) >= hub.max_requests
        if over_budget:
            self.close_connection = True
            self._send(503, {"error": "fake hub: request budget spent"})
            threading.Thread(target=hub.stop, daemon=True).start()
            return
        status = 500
        try:
            status = self._route(method, path)
        except _HubError as err:
            status = err.status
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._read_body()  # drain, so the connection stays usable
            self._send(err.status, {"error": err.message}, headers)
        except _Dropped:
            status = 0
        except (ConnectionError, BrokenPipeError):
            status = -1
            self.close_connection = True
        except Exception as err:  # a bug in the fake: say so loudly
            status = 500
            self._send(500, {"error": f"fake hub crashed: {type(err).__name__}: {err}"})
        with hub.lock:
            hub.log.append((method, path, status))

    def _read_body(self) -> bytes:
        if getattr(self, "_body_read", False):
            return b""
        self._body_read = True
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self):
        body = self._read_body()
        try:
            return json.loads(body or b"{}")
        except ValueError:
            raise _HubError(400, "Malformed JSON body")

    def _send(self, status: int, payload=None, headers: dict | None = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(payload if payload is not None else {}).encode()
        self.send_response(status)
        content_type = "application/octet-stream" if raw is not None else "application/json"
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drop_midway(self) -> None:
        """Read half the request body, then cut the connection: what a network failure mid-upload looks like."""
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(max(1, length // 2))
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.connection.close()
        raise _Dropped()

    # ---------------------------------------------------------------- auth
    def _user(self, required: bool = False, write: bool = False) -> str | None:
        auth = self.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        if not token:
            if required or write:
                raise _HubError(401, "Invalid username or password.")
            return None
        entry = self.hub.tokens.get(token)
        if entry is None:
            raise _HubError(401, "Invalid credentials in Authorization header")
        user, role = entry
        if write and role != "write":
            raise _HubError(403, "You don't have the rights to write with this token: it is read-only")
        return user

    def _may_write(self, user: str, namespace: str) -> None:
        if namespace != user and namespace not in self.hub.orgs.get(user, []):
            raise _HubError(403, f'You don\'t have the rights to create a model under the namespace "{namespace}"')

    def _repo(self, repo_id: str, write: bool = False) -> _Repo:
        user = self._user(write=write)
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and user is None):
            raise _HubError(404 if user else 401, "Repository not found", "RepoNotFound")
        if write:
            self._may_write(user, repo_id.split("/")[0])
        return repo

    # ---------------------------------------------------------------- routes
    def _route(self, method: str, path: str) -> int:
        m = None
        if method == "GET" and path == "/api/whoami-v2":
            return self._whoami()
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo()
        if method == "GET" and path == "/api/agent-harnesses":  # the client's best-effort registry fetch
            self._send(200, {"standardEnvVars": [], "harnesses": {}})
            return 200
        if method == "POST" and path == "/api/validate-yaml":
            self._read_body()
            self._send(200, {"errors": [], "warnings": []})
            return 200
        if method == "PUT" and (m := re.fullmatch(r"/lfs-upload/([0-9a-f]{64})", path)):
            return self._lfs_put(m.group(1))
        if method == "POST" and (m := re.fullmatch(r"/([^/]+/[^/]+)\.git/info/lfs/objects/batch", path)):
            return self._lfs_batch(m.group(1))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/(preupload|commit|revision|tree)/(.+))?", path):
            repo_id, action, rest = m.groups()
            if method == "POST" and action == "preupload":
                return self._preupload(repo_id, rest)
            if method == "POST" and action == "commit":
                return self._commit(repo_id, rest)
            if method == "GET" and action in (None, "revision"):
                return self._model_info(repo_id, rest or "main")
            if method == "GET" and action == "tree":
                return self._tree(repo_id, rest)
        if method in ("GET", "HEAD") and (m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)):
            return self._resolve(*m.groups())
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)(?:/(revision|tree|paths-info)/(.+))?", path):
            repo_id, action, rest = m.groups()
            repo_id = DATASET_PREFIX + repo_id
            if method == "GET" and action in (None, "revision"):
                return self._model_info(repo_id, rest or "main")
            if method == "GET" and action == "tree":
                return self._tree(repo_id, rest)
            if method == "POST" and action == "paths-info":
                return self._paths_info(repo_id, rest)
        if method in ("GET", "HEAD") and (m := re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)):
            repo_id, revision, file = m.groups()
            return self._resolve(DATASET_PREFIX + repo_id, revision, file)
        raise _HubError(404, f"fake hub: no route for {method} {path}")

    def _whoami(self) -> int:
        user = self._user(required=True)
        role = self.hub.tokens[self.headers["Authorization"][7:].strip()][1]
        orgs = [{"name": org, "roleInOrg": "write"} for org in self.hub.orgs.get(user, [])]
        self._send(
            200,
            {
                "type": "user",
                "name": user,
                "fullname": user,
                "orgs": orgs,
                "auth": {"type": "access_token", "accessToken": {"displayName": "fake", "role": role}},
            },
        )
        return 200

    def _create_repo(self) -> int:
        user = self._user(write=True)
        body = self._json_body()
        name, namespace = body.get("name"), body.get("organization") or user
        if body.get("type") not in (None, "model"):
            raise _HubError(400, "fake hub: only model repos are supported")
        if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,94}", name) or "--" in name or ".." in name:
            raise _HubError(400, f"Invalid repo name: {name!r}")
        self._may_write(user, namespace)
        repo_id = f"{namespace}/{name}"
        url = f"{self.hub.url}/{repo_id}"
        with self.hub.lock:
            exists = repo_id in self.hub.repos
            if not exists:
                private = body.get("visibility") == "private" or bool(body.get("private"))
                self.hub.repos[repo_id] = _Repo(repo_id, private)
        if exists:  # like the Hub: 409, with the url (create_repo(exist_ok=True) reads it)
            message = "You already created this model repo"
            self._send(409, {"error": message, "url": url}, {"X-Error-Message": message})
            return 409
        self._send(200, {"url": url, "name": repo_id, "id": uuid.uuid4().hex})
        return 200

    def _preupload(self, repo_id: str, revision: str) -> int:
        repo = self._repo(repo_id, write=True)
        body = self._json_body()
        found = repo.at(revision)
        if found is None:
            raise _HubError(404, f"Revision not found: {revision}", "RevisionNotFound")
        files = found[1]
        answer = []
        for item in body.get("files", []):
            path, size = item["path"], int(item.get("size", 0))
            lfs = self.hub.lfs_threshold is not None and size >= self.hub.lfs_threshold
            old = files.get(path)
            oid = None
            if old is not None:
                oid = hashlib.sha256(old).hexdigest() if lfs else git_blob_sha1(old)
            answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": answer, "commitOid": found[0]})
        return 200

    def _lfs_batch(self, repo_id: str) -> int:
        self._repo(repo_id, write=True)
        body = self._json_body()
        objects = []
        for obj in body.get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs_objects:  # already stored objects need no upload
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-upload/{obj['oid']}", "header": {}}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})
        return 200

    def _lfs_put(self, oid: str) -> int:
        data = self._read_body()
        if hashlib.sha256(data).hexdigest() != oid:
            raise _HubError(400, "LFS object does not match its oid")
        with self.hub.lock:
            self.hub.lfs_objects[oid] = data
        self._send(200, {})
        return 200

    def _commit(self, repo_id: str, revision: str) -> int:
        repo = self._repo(repo_id, write=True)
        with self.hub.lock:
            drop = self.hub.drop_commits > 0
            if drop:
                self.hub.drop_commits -= 1
        if drop:
            self._drop_midway()
        if revision not in ("main", "refs/heads/main"):
            raise _HubError(400, "fake hub: commits go to main only")
        lines = [json.loads(line) for line in self._read_body().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise _HubError(400, "Commit payload must start with a header line")
        with self.hub.lock:
            files = dict(repo.head()[1])
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    files[value["path"]] = base64.b64decode(value["content"])
                elif key == "lfsFile":
                    data = self.hub.lfs_objects.get(value["oid"])
                    if data is None:
                        raise _HubError(400, f"LFS object {value['oid']} was never uploaded")
                    files[value["path"]] = data
                elif key == "deletedFile":
                    files.pop(value["path"], None)
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: d for p, d in files.items() if not p.startswith(prefix)}
                else:
                    raise _HubError(400, f"fake hub: unsupported commit operation {key!r}")
            oid = hashlib.sha1(json.dumps(lines, sort_keys=True).encode() + uuid.uuid4().bytes).hexdigest()
            repo.commits.append((oid, files))
        self._send(
            200,
            {
                "success": True,
                "commitOid": oid,
                "commitUrl": f"{self.hub.url}/{repo_id}/commit/{oid}",
                "pullRequestUrl": None,
            },
        )
        return 200

    def _model_info(self, repo_id: str, revision: str) -> int:
        repo = self._repo(repo_id)
        found = repo.at(revision)
        if found is None:
            raise _HubError(404, f"Revision not found: {revision}", "RevisionNotFound")
        oid, files = found
        stamp = repo.created.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        self._send(
            200,
            {
                "_id": repo.repo_id,
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": oid,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": [],
                "library_name": "transformers",
                "createdAt": stamp,
                "lastModified": stamp,
                "siblings": [{"rfilename": path, "size": len(data)} for path, data in sorted(files.items())],
            },
        )
        return 200

    def _tree(self, repo_id: str, rest: str) -> int:
        repo = self._repo(repo_id)
        revision, _, folder = rest.partition("/")
        found = repo.at(revision)
        if found is None:
            raise _HubError(404, f"Revision not found: {revision}", "RevisionNotFound")
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        recursive = self.query.get("recursive", ["false"])[0].lower() == "true"
        entries, folders = [], set()
        for path, data in sorted(found[1].items()):
            if not path.startswith(prefix):
                continue
            inner = path[len(prefix) :]
            if "/" in inner and not recursive:
                folders.add(prefix + inner.split("/")[0])
                continue
            entries.append({"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path})
        entries += [
            {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}
            for d in sorted(folders)
        ]
        self._send(200, entries)
        return 200

    def _paths_info(self, repo_id: str, revision: str) -> int:
        """POST form or JSON {"paths": [...], "expand": ...}: the entries that exist, files and folders."""
        repo = self._repo(repo_id)
        raw = self._read_body()
        try:
            paths = json.loads(raw).get("paths", [])
        except ValueError:
            paths = parse_qs(raw.decode()).get("paths", [])
        found = repo.at(revision)
        if found is None:
            raise _HubError(404, f"Revision not found: {revision}", "RevisionNotFound")
        entries = []
        for wanted in paths:
            wanted = wanted.strip("/")
            if wanted in found[1]:
                data = found[1][wanted]
                entries.append({"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": wanted})
            elif any(p.startswith(wanted + "/") for p in found[1]) or wanted == "":
                entries.append(
                    {"type": "directory", "oid": hashlib.sha1(wanted.encode()).hexdigest(), "size": 0, "path": wanted}
                )
        self._send(200, entries)
        return 200

    def _resolve(self, repo_id: str, revision: str, path: str) -> int:
        repo = self._repo(repo_id)
        found = repo.at(revision)
        if found is None:
            raise _HubError(404, f"Revision not found: {revision}", "RevisionNotFound")
        oid, files = found
        data = files.get(path)
        if data is None:
            raise _HubError(404, "Entry not found", "EntryNotFound")
        headers = {"ETag": f'"{git_blob_sha1(data)}"', "X-Repo-Commit": oid, "Accept-Ranges": "bytes"}
        status, body = 200, data
        ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if ranged and self.command == "GET":
            start = int(ranged.group(1))
            end = int(ranged.group(2)) if ranged.group(2) else len(data) - 1
            body = data[start : end + 1]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
        self._send(status, raw=body, headers=headers)
        return status


if __name__ == "__main__":  # handy for poking at it by hand: python tests/hub_server.py
    with FakeHub() as hub:
        print(f"fake hub at {hub.url}; write token {WRITE_TOKEN}; Ctrl-C to stop")
        try:
            while hub._server is not None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
