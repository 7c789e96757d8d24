"""A tiny, in-process stand-in for the Hugging Face Hub HTTP API, for offline tests.

It implements only the routes that `huggingface_hub` 2.4 (and `transformers` on top of it) call for
`create_repo`, `create_branch`, `upload_folder`/`create_commit` (also with `create_pr=True`),
`model_info`/`repo_info`, `list_repo_tree`, `hf_hub_download` and `snapshot_download`.

Every file is committed as a *regular* git blob: the preupload route answers `"uploadMode": "regular"`
for all files, so the client base64-encodes contents into the commit payload and never talks to an
LFS or Xet storage backend. Blobs are stored on disk under `storage_dir/blobs/<git-oid>`; repos,
branches and commits (a commit is just a `{path: blob oid}` snapshot) live in memory.

`huggingface_hub` reads `HF_ENDPOINT` at import time, so clients must run in a subprocess whose
environment comes from `hub_env()`. Every request is appended to `storage_dir/requests.log`
("METHOD path status") which helps when a new client version calls a route that is missing here.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import mimetypes
import os
import re
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from subprocess_env import isolated_env

DEFAULT_NAMESPACE = "test-user"  # owner of repos created without a namespace (what `whoami` would return)
_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_SEG = r"(?P<rev>[^/]+)"  # clients URL-quote revisions with safe="" ("refs/pr/1" -> "refs%2Fpr%2F1")


class HubError(Exception):
    """An HTTP error answered the way the Hub does: status, `X-Error-Code` header and a JSON `error`."""

    def __init__(self, status: int, message: str, code: str | None = None, headers=None, body=None):
        super().__init__(message)
        self.status, self.code, self.headers, self.body = status, code, headers or {}, body or {}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")  # the Hub's date format


def git_oid(data: bytes) -> str:
    """Git blob sha1, which is also the ETag the Hub serves for regular (non-LFS) files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Repo:
    """One model repo: branches (`refs`) pointing at commits, each commit a `{path: blob oid}` snapshot."""

    def __init__(self, repo_id: str, private: bool):
        self.repo_id, self.private, self.num_prs = repo_id, private, 0
        self.commits: dict[str, dict[str, str]] = {}
        self.refs = {"main": self.add_commit({}, "initial commit", None)}

    def add_commit(self, tree: dict[str, str], message: str, parent: str | None) -> str:
        seed = json.dumps([self.repo_id, parent, message, sorted(tree.items()), len(self.commits)])
        sha = hashlib.sha1(seed.encode()).hexdigest()
        self.commits[sha] = tree
        return sha

    def resolve(self, revision: str) -> str:
        """Branch name or full commit sha -> commit sha; 404 RevisionNotFound otherwise."""
        if revision in self.refs:
            return self.refs[revision]
        if revision in self.commits:
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class HubServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, storage_dir: str | os.PathLike):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.storage = Path(storage_dir)
        (self.storage / "blobs").mkdir(parents=True, exist_ok=True)
        self.repos: dict[str, Repo] = {}
        self.lock = threading.Lock()
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"

    def repo(self, repo_id: str, authorized: bool) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorized):
            raise HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")
        return repo

    def read_blob(self, oid: str) -> bytes:
        return (self.storage / "blobs" / oid).read_bytes()

    def write_blob(self, data: bytes) -> str:
        oid = git_oid(data)
        (self.storage / "blobs" / oid).write_bytes(data)
        return oid


class _Handler(BaseHTTPRequestHandler):
    server: HubServer
    # (method, path regex, handler name); first match wins.
    ROUTES = [
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("POST", rf"/api/models/{_REPO}/preupload/{_SEG}", "preupload"),
        ("POST", rf"/api/models/{_REPO}/commit/{_SEG}", "commit"),
        ("POST", rf"/api/models/{_REPO}/branch/{_SEG}", "create_branch"),
        ("POST", rf"/api/models/{_REPO}/discussions", "create_pr"),
        ("GET", rf"/api/models/{_REPO}/discussions/(?P<num>\d+)", "get_pr"),
        ("GET", rf"/api/models/{_REPO}(?:/revision/{_SEG})?", "model_info"),
        ("GET", rf"/api/models/{_REPO}/tree/{_SEG}(?:/(?P<path>.+))?", "tree"),
        ("GET", rf"/{_REPO}/resolve/{_SEG}/(?P<path>.+)", "resolve"),
        ("HEAD", rf"/{_REPO}/resolve/{_SEG}/(?P<path>.+)", "resolve"),
    ]

    def log_message(self, *args):  # silence stderr; requests go to storage_dir/requests.log
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    # -- plumbing ------------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        self.authorized = self.headers.get("Authorization", "").startswith("Bearer ")
        try:
            for route_method, pattern, name in self.ROUTES:
                match = re.fullmatch(pattern, url.path)
                if route_method == method and match:
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    if method == "POST" and not self.authorized:
                        raise HubError(401, "Invalid credentials in Authorization header")
                    with self.server.lock:
                        status, payload, headers = getattr(self, f"route_{name}")(**params)
                    break
            else:
                raise HubError(404, f"Route not implemented by the test hub server: {method} {url.path}")
        except Exception as exc:  # answer like the Hub instead of dropping the connection
            err = exc if isinstance(exc, HubError) else HubError(500, f"{type(exc).__name__}: {exc}")
            status, payload, headers = err.status, {"error": str(err), **err.body}, dict(err.headers)
            if err.code:
                headers["X-Error-Code"] = err.code
            headers["X-Error-Message"] = str(err)
        with self.server.lock, open(self.server.storage / "requests.log", "a") as log:
            log.write(f"{method} {self.path} {status}\n")
        self._send(status, payload, headers)

    def _send(self, status: int, payload, headers: dict) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        if not isinstance(payload, bytes):
            self.send_header("Content-Type", "application/json")
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self) -> dict:
        return json.loads(self.body or b"{}")

    def _url(self, repo_id: str, suffix: str = "") -> str:
        return f"{self.server.endpoint}/{repo_id}{suffix}"

    # -- routes --------------------------------------------------------------------------------------

    def route_create_repo(self):
        """`HfApi.create_repo`. For an existing repo: 409, whose JSON must still carry the `url` (with
        `exist_ok=True` the client ignores the 409 and builds its `RepoUrl` from that body)."""
        data = self._json()
        if data.get("type", "model") != "model":
            raise HubError(400, "The test hub server only hosts model repos")
        repo_id = f"{data.get('organization') or DEFAULT_NAMESPACE}/{data['name']}"
        if repo_id in self.server.repos:
            raise HubError(409, "You already created this model repo", body={"url": self._url(repo_id)})
        self.server.repos[repo_id] = Repo(repo_id, private=data.get("visibility") == "private")
        return 200, {"url": self._url(repo_id), "name": repo_id, "id": repo_id}, {}

    def route_validate_yaml(self):
        """`upload_folder`/`create_commit` POST a README.md's text here first; we accept any metadata."""
        return 200, {"errors": [], "warnings": []}, {}

    def route_preupload(self, repo, rev):
        """`_fetch_upload_modes` (create_commit and the hf_xet upload pipeline): everything is "regular",
        so no LFS batch / Xet upload follows. `oid` = current blob oid lets the client skip unchanged files."""
        r = self.server.repo(repo, self.authorized)
        tree = r.commits[r.resolve(rev)]
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": tree.get(f["path"])}
            for f in self._json()["files"]
        ]
        return 200, {"files": files, "commitOid": r.refs["main"]}, {}

    def route_commit(self, repo, rev):
        """`create_commit` / `upload_folder`: NDJSON body of `header`, `file` (base64), `deletedFile`,
        `deletedFolder` lines. With `?create_pr=1` the commit goes to a new `refs/pr/N` branch."""
        r = self.server.repo(repo, self.authorized)
        if rev not in r.refs:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        branch, pr_url = rev, None
        if self.query.get("create_pr") == "1":
            r.num_prs += 1
            branch, pr_url = f"refs/pr/{r.num_prs}", self._url(repo, f"/discussions/{r.num_prs}")
            r.refs[branch] = r.refs[rev]
        parent = r.refs[branch]
        tree, summary = dict(r.commits[parent]), "commit"
        for line in self.body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", summary)
                if value.get("parentCommit") not in (None, parent):
                    raise HubError(412, "A commit has happened since. Please refresh and try again.")
            elif key == "file":
                tree[value["path"]] = self.server.write_blob(base64.b64decode(value["content"]))
            elif key == "deletedFile":
                if tree.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                tree = {p: oid for p, oid in tree.items() if not p.startswith(prefix)}
            else:  # "lfsFile" cannot happen: preupload never answers "lfs"
                raise HubError(400, f"Unsupported commit operation: {key}")
        sha = r.refs[branch] = r.add_commit(tree, summary, parent)
        payload = {"success": True, "commitOid": sha, "commitUrl": self._url(repo, f"/commit/{sha}")}
        return 200, {**payload, "pullRequestUrl": pr_url}, {}

    def route_create_branch(self, repo, rev):
        """`HfApi.create_branch` (used by `push_to_hub(revision=...)`): 409 when it already exists."""
        r = self.server.repo(repo, self.authorized)
        if rev in r.refs:
            raise HubError(409, f"Branch {rev} already exists")
        r.refs[rev] = r.resolve(self._json().get("startingPoint") or "main")
        return 200, {}, {}

    def route_create_pr(self, repo):
        """`create_pull_request` (hf_xet upload pipeline with `create_pr=True`): opens `refs/pr/N` off main."""
        r = self.server.repo(repo, self.authorized)
        r.num_prs += 1
        r.refs[f"refs/pr/{r.num_prs}"] = r.refs["main"]
        return 200, {"num": r.num_prs, "url": self._url(repo, f"/discussions/{r.num_prs}")}, {}

    def route_get_pr(self, repo, num):
        """`get_discussion_details`, called by `create_pull_request` right after creating it."""
        self.server.repo(repo, self.authorized)
        details = {
            "num": int(num), "title": "Pull request", "status": "open", "isPullRequest": True,
            "createdAt": _now(), "author": {"name": DEFAULT_NAMESPACE},
            "repo": {"name": repo, "type": "model"}, "events": [], "filesWithConflicts": [],
            "changes": {"base": "refs/heads/main"},
        }  # fmt: skip
        return 200, details, {}

    def route_model_info(self, repo, rev="main"):
        """`model_info`/`repo_info` (snapshot_download resolves "main" to a commit sha here)."""
        r = self.server.repo(repo, self.authorized)
        sha = r.resolve(rev)
        siblings = [
            {"rfilename": path, "blobId": oid, "size": len(self.server.read_blob(oid))}
            for path, oid in sorted(r.commits[sha].items())
        ]
        info = {
            "_id": repo, "id": repo, "modelId": repo, "author": repo.split("/")[0], "sha": sha,
            "private": r.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
            "tags": [], "lastModified": _now(), "siblings": siblings,
        }  # fmt: skip
        return 200, info, {}

    def route_tree(self, repo, rev, path=""):
        """`list_repo_tree` (snapshot_download lists files with `recursive=True` at the resolved sha)."""
        r = self.server.repo(repo, self.authorized)
        tree, recursive = r.commits[r.resolve(rev)], self.query.get("recursive") in ("True", "true", "1")
        prefix, entries = (path.strip("/") + "/") if path else "", {}
        for file_path, oid in sorted(tree.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                folder = prefix + "/".join(parts[:depth])
                entries.setdefault(folder, {"type": "directory", "oid": git_oid(folder.encode()), "size": 0})
            if recursive or len(parts) == 1:
                size = len(self.server.read_blob(oid))
                entries[file_path] = {"type": "file", "oid": oid, "size": size}
        if path and not entries:
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        return 200, [{**entry, "path": p} for p, entry in entries.items()], {}

    def route_resolve(self, repo, rev, path):
        """`hf_hub_download` / transformers `cached_file`: HEAD for metadata (X-Repo-Commit, ETag,
        Content-Length), then GET for the bytes. A missing file is a 404 `EntryNotFound` that still carries
        `X-Repo-Commit`, so the client can cache the absence (`.no_exist`), as transformers relies on."""
        r = self.server.repo(repo, self.authorized)
        sha = r.resolve(rev)
        oid = r.commits[sha].get(path)
        if oid is None:
            raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": sha})
        data = self.server.read_blob(oid)
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{oid}"',
            "Content-Type": mimetypes.guess_type(path)[0] or "application/octet-stream",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
        }
        return 200, data, headers


@contextlib.contextmanager
def run_hub_server(storage_dir: str | os.PathLike):
    """Serve a fresh, empty Hub on a random free port of 127.0.0.1; yields its endpoint URL."""
    server = HubServer(storage_dir)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="test-hub-server", daemon=True)
    thread.start()
    try:
        yield server.endpoint
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def hub_env(endpoint: str, tmp_path: str | os.PathLike, *, disable_xet: bool = False) -> dict[str, str]:
    """Environment for a client subprocess talking to `endpoint` with fresh caches under `tmp_path`.

    It is `os.environ` without any `HF_*`/`HUGGINGFACE_*`/`TRANSFORMERS_*` variable (so neither the test
    session's `HF_HUB_OFFLINE=1` nor a developer's real token or cache leak in), plus: `HF_ENDPOINT`,
    `HF_HUB_OFFLINE=0`, `HF_HOME` and `HF_MODULES_CACHE` under `tmp_path`, `HF_TOKEN=test-token`,
    telemetry and progress bars off, `NO_PROXY` for 127.0.0.1, and `src/` on `PYTHONPATH`.

    `disable_xet=True` sets `HF_HUB_DISABLE_XET=1`, which switches `upload_folder` from the hf_xet
    pipelined upload (the default when hf_xet is installed) to the legacy single `create_commit`.
    """
    env = isolated_env(
        tmp_path,
        HF_ENDPOINT=endpoint,
        HF_HUB_OFFLINE="0",
        HF_TOKEN="test-token",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
    )
    if disable_xet:
        env["HF_HUB_DISABLE_XET"] = "1"
    return env
