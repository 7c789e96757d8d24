"""A tiny, in-process stand-in for the Hugging Face Hub HTTP API, for offline tests.

It implements only the routes that `huggingface_hub` 2.4 (and `transformers` on top of it) call for
`create_repo`, `create_branch`, `upload_folder`/`create_commit` (also with `create_pr=True`),
`model_info`/`repo_info`, `list_repo_tree`, `hf_hub_download` and `snapshot_download`.

Files travel as they do on the Hub. A new repo starts with the Hub's default `.gitattributes`. The preupload
route answers `"uploadMode": "lfs"` for a file of 10 MiB or more, one whose first 512 bytes hold a NUL byte
(binary), or one whose path the repo's `.gitattributes` tracks with `filter=lfs` (`*.safetensors`, `*.bin`,
...); every other file is "regular" and travels base64-encoded inside the commit. An LFS file goes through the
git-lfs batch API (`POST /{repo}.git/info/lfs/objects/batch`, basic transfer), a `PUT` of its bytes to the
upload URL the batch answered, the verify call, and finally an `lfsFile` line of the commit that names its
sha256. Xet storage is not implemented: a client must run with `HF_HUB_DISABLE_XET=1` (`hub_env` sets it) to
push binary files, or it asks for a Xet token and fails; one without it may push folders of text files only.

Storage: regular blobs and LFS pointer files under `storage_dir/blobs/<git oid>`, LFS objects under
`storage_dir/lfs/<sha256>`; repos, branches and commits (a commit is just a `{path: blob oid}` snapshot, where
an LFS file's oid is its pointer's) live in memory. Downloads serve an LFS file's bytes with the Hub's headers
(`X-Linked-Etag` = its sha256, `X-Linked-Size`), and listings carry its `lfs` block; never a Xet hash.

`huggingface_hub` reads `HF_ENDPOINT` at import time, so clients must run in a subprocess whose
environment comes from `hub_env()`. Every request is appended to `storage_dir/requests.log` as
"METHOD path status", followed for the upload routes by what they did, e.g.
`POST /api/models/a/b/commit/main 200 file=config.json lfsFile=model.safetensors` or
`POST /a/b.git/info/lfs/objects/batch 200 upload=<sha256>` (`stored=<sha256>` for an object already there).
The log also helps when a new client version calls a route that is missing here.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
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
    """Git blob sha1: the ETag the Hub serves for regular files, and an LFS file's pointer oid."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


# The `.gitattributes` of a new model repo on the Hub (its initial commit).
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
        "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
        "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
        "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)  # fmt: skip
LFS_MIN_SIZE = 10 * 1024 * 1024  # the Hub refuses regular (non-LFS) files from 10 MiB on
SAMPLE_SIZE = 512  # bytes of each file the client sends to the preupload route


def lfs_tracked(path: str, gitattributes: str) -> bool:
    """Whether `.gitattributes` gives `path` the `filter=lfs` attribute (the last matching line decides)."""
    tracked = False
    for line in gitattributes.splitlines():
        pattern, *attributes = line.split() or ["#"]
        if pattern.startswith("#"):
            continue
        if "/" in pattern.strip("/"):  # anchored at the repo root; "a/**/b" also matches "a/b"
            matches = fnmatch.fnmatchcase(path, pattern.lstrip("/"))
            matches = matches or fnmatch.fnmatchcase(path, pattern.lstrip("/").replace("**/", ""))
        else:  # matches the file name in any folder
            matches = fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern.strip("/"))
        for attribute in attributes if matches else ():
            if attribute.startswith("filter=") or attribute in ("-filter", "!filter"):
                tracked = attribute == "filter=lfs"
    return tracked


def needs_lfs(path: str, sample: bytes, size: int, gitattributes: str) -> bool:
    """The Hub's rule for `"uploadMode": "lfs"`: large, binary (a NUL byte in the sample) or LFS-tracked."""
    return size >= LFS_MIN_SIZE or b"\0" in sample[:SAMPLE_SIZE] or lfs_tracked(path, gitattributes)


class Repo:
    """One model repo: branches (`refs`) pointing at commits, each commit a `{path: blob oid}` snapshot."""

    def __init__(self, repo_id: str, private: bool, gitattributes_oid: str):
        self.repo_id, self.private, self.num_prs = repo_id, private, 0
        self.commits: dict[str, dict[str, str]] = {}
        self.refs = {"main": self.add_commit({".gitattributes": gitattributes_oid}, "initial commit", None)}

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
        (self.storage / "lfs").mkdir(exist_ok=True)
        self.repos: dict[str, Repo] = {}
        # pointer blob oid -> (sha256, size) of its LFS file; sha256 -> size of objects a batch may upload
        self.lfs_pointers: dict[str, tuple[str, int]] = {}
        self.lfs_requested: dict[str, int] = {}
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

    def lfs_object(self, sha256: str) -> Path:
        return self.storage / "lfs" / sha256

    def lfs_stored(self, sha256: str, size: int | None = None) -> bool:
        path = self.lfs_object(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def write_lfs_pointer(self, sha256: str, size: int) -> str:
        oid = self.write_blob(lfs_pointer(sha256, size))
        self.lfs_pointers[oid] = (sha256, size)
        return oid

    def file_content(self, oid: str) -> bytes:
        """What a download of the file with blob `oid` returns: the LFS object's bytes for a pointer."""
        lfs = self.lfs_pointers.get(oid)
        return self.lfs_object(lfs[0]).read_bytes() if lfs else self.read_blob(oid)

    def file_size(self, oid: str) -> int:
        lfs = self.lfs_pointers.get(oid)
        return lfs[1] if lfs else (self.storage / "blobs" / oid).stat().st_size

    def file_oid(self, oid: str) -> str:
        """The oid the preupload route reports for a stored file: sha256 for LFS files, git oid otherwise
        (the client compares it with the same hash of its local file to skip unchanged files)."""
        lfs = self.lfs_pointers.get(oid)
        return lfs[0] if lfs else oid

    def gitattributes(self, tree: dict[str, str]) -> str:
        oid = tree.get(".gitattributes")
        return self.file_content(oid).decode(errors="replace") if oid else ""


class _Handler(BaseHTTPRequestHandler):
    server: HubServer
    # (method, path regex, handler name); first match wins.
    ROUTES = [
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("POST", rf"/api/models/{_REPO}/preupload/{_SEG}", "preupload"),
        ("POST", rf"/{_REPO}\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", rf"/_lfs_upload/{_REPO}/(?P<oid>[0-9a-f]{{64}})", "lfs_upload"),
        ("POST", rf"/{_REPO}\.git/info/lfs/objects/verify", "lfs_verify"),
        ("POST", rf"/api/models/{_REPO}/commit/{_SEG}", "commit"),
        ("GET", rf"/api/models/{_REPO}/xet-(?:read|write)-token/{_SEG}", "xet_token"),
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

    def do_PUT(self):
        self._dispatch("PUT")

    # -- plumbing ------------------------------------------------------------------------------------

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()  # the CRLF closing the chunk
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers, then the final CRLF
                pass
            return bytes(body)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        self.query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.body = self._read_body()
        self.authorized = self.headers.get("Authorization", "").startswith("Bearer ")
        self.log_details: list[str] = []  # what an upload route did, appended to its requests.log line
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
            log.write(" ".join([method, self.path, str(status), *self.log_details]) + "\n")
        self._send(status, payload, headers)

    def _send(self, status: int, payload, headers: dict) -> None:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        if not isinstance(payload, bytes) and "Content-Type" not in headers:
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
        `exist_ok=True` the client ignores the 409 and builds its `RepoUrl` from that body). A new repo's
        initial commit holds the Hub's default `.gitattributes`."""
        data = self._json()
        if data.get("type", "model") != "model":
            raise HubError(400, "The test hub server only hosts model repos")
        repo_id = f"{data.get('organization') or DEFAULT_NAMESPACE}/{data['name']}"
        if repo_id in self.server.repos:
            raise HubError(409, "You already created this model repo", body={"url": self._url(repo_id)})
        gitattributes = self.server.write_blob(DEFAULT_GITATTRIBUTES.encode())
        self.server.repos[repo_id] = Repo(repo_id, data.get("visibility") == "private", gitattributes)
        return 200, {"url": self._url(repo_id), "name": repo_id, "id": repo_id}, {}

    def route_validate_yaml(self):
        """`upload_folder`/`create_commit` POST a README.md's text here first; we accept any metadata."""
        return 200, {"errors": [], "warnings": []}, {}

    def route_preupload(self, repo, rev):
        """`_fetch_upload_modes` (create_commit and the hf_xet upload pipeline): "lfs" or "regular" per file
        (see `needs_lfs`), and the oid of the file already at that path (see `HubServer.file_oid`), if any."""
        r = self.server.repo(repo, self.authorized)
        sha = r.resolve(rev)
        tree, gitattributes = r.commits[sha], self.server.gitattributes(r.commits[sha])
        files = []
        for f in self._json()["files"]:
            lfs = needs_lfs(f["path"], base64.b64decode(f["sample"]), f["size"], gitattributes)
            oid = tree.get(f["path"])
            files.append({
                "path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                "oid": None if oid is None else self.server.file_oid(oid),
            })  # fmt: skip
        return 200, {"files": files, "commitOid": sha}, {}

    def route_lfs_batch(self, repo):
        """git-lfs batch API (`post_lfs_batch_info`), upload operation with the "basic" transfer: each object
        not yet stored gets an `upload` action (a PUT of its bytes to `href`, without the Hub token, as to a
        presigned storage URL) and a `verify` action; an object already stored gets no actions."""
        r = self.server.repo(repo, self.authorized)
        data = self._json()
        if data.get("operation") != "upload" or "basic" not in data.get("transfers", ["basic"]):
            raise HubError(400, "The test hub server only answers LFS uploads with the basic transfer")
        if data.get("hash_algo", "sha256") != "sha256":
            raise HubError(400, f"Unsupported hash algorithm: {data['hash_algo']}")
        if (data.get("ref") or {}).get("name"):
            r.resolve(data["ref"]["name"].removeprefix("refs/heads/"))
        objects = []
        for obj in data["objects"]:
            oid, size = obj["oid"], obj["size"]
            entry = {"oid": oid, "size": size, "authenticated": True}
            if not (re.fullmatch(r"[0-9a-f]{64}", oid) and isinstance(size, int) and size >= 0):
                entry["error"] = {"code": 422, "message": f"Invalid object: {oid} ({size} bytes)"}
                self.log_details.append(f"invalid={oid}")
            elif self.server.lfs_stored(oid, size):
                self.log_details.append(f"stored={oid}")
            else:
                self.server.lfs_requested[oid] = size
                entry["actions"] = {
                    "upload": {"href": f"{self.server.endpoint}/_lfs_upload/{repo}/{oid}", "header": {}},
                    "verify": {"href": self._url(repo, ".git/info/lfs/objects/verify"), "header": {}},
                }
                self.log_details.append(f"upload={oid}")
            objects.append(entry)
        payload = {"transfer": "basic", "objects": objects, "hash_algo": "sha256"}
        return 200, payload, {"Content-Type": "application/vnd.git-lfs+json"}

    def route_lfs_upload(self, repo, oid):
        """The upload URL of a batch answer: stores the body as LFS object `oid` once its sha256 and size
        match what the batch call announced. Errors are 4xx: the client retries 5xx answers with backoff."""
        if "Authorization" in self.headers:
            raise HubError(400, "Only one auth mechanism allowed: the upload URL is presigned, send no token")
        if oid not in self.server.lfs_requested:
            raise HubError(403, f"No upload of {oid} was requested through the LFS batch API")
        actual, size = hashlib.sha256(self.body).hexdigest(), self.server.lfs_requested[oid]
        if actual != oid or len(self.body) != size:
            got = f"sha256 {actual} ({len(self.body)} bytes)"
            raise HubError(400, f"Upload does not match: {got} instead of {oid} ({size} bytes)")
        self.server.lfs_object(oid).write_bytes(self.body)
        del self.server.lfs_requested[oid]
        self.log_details.append(f"{len(self.body)}B")
        return 200, b"", {}

    def route_lfs_verify(self, repo):
        """The verify action: 200 once the object is stored with that size, 404 otherwise."""
        self.server.repo(repo, self.authorized)
        data = self._json()
        if not self.server.lfs_stored(data["oid"], data.get("size")):
            raise HubError(404, f"LFS object {data['oid']} ({data.get('size')} bytes) is not stored")
        return 200, {"message": "Object verified"}, {}

    def route_commit(self, repo, rev):
        """`create_commit` / `upload_folder`: NDJSON body of `header`, `file` (base64), `lfsFile` (an
        uploaded LFS object by sha256), `deletedFile`, `deletedFolder` lines. With `?create_pr=1` the commit
        goes to a new `refs/pr/N` branch. Like the Hub, it refuses a regular `file` that must be LFS (binary,
        10 MiB or more, or tracked by `.gitattributes`; empty files excepted) and an `lfsFile` whose object
        was not uploaded."""
        r = self.server.repo(repo, self.authorized)
        if rev not in r.refs:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        parent = r.refs[rev]
        tree, summary = dict(r.commits[parent]), "commit"
        gitattributes = self.server.gitattributes(tree)
        for line in self.body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", summary)
                if value.get("parentCommit") not in (None, parent):
                    raise HubError(412, "A commit has happened since. Please refresh and try again.")
                continue
            self.log_details.append(f"{key}={value['path']}")
            if key == "file":
                content = base64.b64decode(value["content"])
                if content and needs_lfs(value["path"], content, len(content), gitattributes):
                    why = "binary, 10 MiB or more, or tracked in .gitattributes"
                    raise HubError(
                        400, f"Your push was rejected: {value['path']} must go through LFS ({why})"
                    )
                tree[value["path"]] = self.server.write_blob(content)
            elif key == "lfsFile":
                if value.get("algo", "sha256") != "sha256":
                    raise HubError(400, f"Unsupported LFS hash algorithm: {value['algo']}")
                if not self.server.lfs_stored(value["oid"], value.get("size")):
                    missing = f"the LFS object of {value['path']} ({value['oid']}) was not uploaded"
                    raise HubError(400, f"Your push was rejected: {missing}")
                size = value.get("size", self.server.lfs_object(value["oid"]).stat().st_size)
                tree[value["path"]] = self.server.write_lfs_pointer(value["oid"], size)
            elif key == "deletedFile":
                if tree.pop(value["path"], None) is None:
                    raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                tree = {p: oid for p, oid in tree.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, f"Unsupported commit operation: {key}")
        branch, pr_url = rev, None
        if self.query.get("create_pr") == "1":
            r.num_prs += 1
            branch, pr_url = f"refs/pr/{r.num_prs}", self._url(repo, f"/discussions/{r.num_prs}")
        sha = r.refs[branch] = r.add_commit(tree, summary, parent)
        payload = {"success": True, "commitOid": sha, "commitUrl": self._url(repo, f"/commit/{sha}")}
        return 200, {**payload, "pullRequestUrl": pr_url}, {}

    def route_xet_token(self, repo, rev):
        """What a client with Xet enabled asks for before uploading a non-regular file: not implemented."""
        fix = "push binary files with HF_HUB_DISABLE_XET=1 (hub_env's default), which uses the LFS batch API"
        raise HubError(404, f"Xet storage is not implemented by the test hub server: {fix}")

    def route_create_branch(self, repo, rev):
        """`HfApi.create_branch` (used by `push_to_hub(revision=...)`): 409 when it already exists."""
        r = self.server.repo(repo, self.authorized)
        if rev in r.refs:
            raise HubError(409, f"Branch {rev} already exists")
        r.refs[rev] = r.resolve(self._json().get("startingPoint") or "main")
        return 200, {}, {}

    def route_create_pr(self, repo):
        """`create_pull_request` (hf_xet upload pipeline, `create_pr=True`): opens `refs/pr/N` off main."""
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

    def _lfs_block(self, oid: str, sha256_key: str) -> dict:
        """The `lfs` entry of a listed file (`sha256_key`: "sha256" in model_info siblings, "oid" in trees)"""
        lfs = self.server.lfs_pointers.get(oid)
        if lfs is None:
            return {}
        return {"lfs": {sha256_key: lfs[0], "size": lfs[1], "pointerSize": len(lfs_pointer(*lfs))}}

    def route_model_info(self, repo, rev="main"):
        """`model_info`/`repo_info` (snapshot_download resolves "main" to a commit sha here)."""
        r = self.server.repo(repo, self.authorized)
        sha = r.resolve(rev)
        siblings = [
            {
                "rfilename": path,
                "blobId": oid,
                "size": self.server.file_size(oid),
                **self._lfs_block(oid, "sha256"),
            }
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
                size = self.server.file_size(oid)
                entries[file_path] = {"type": "file", "oid": oid, "size": size, **self._lfs_block(oid, "oid")}
        if path and not entries:
            raise HubError(404, f"{path} does not exist on {rev}", "EntryNotFound")
        return 200, [{**entry, "path": p} for p, entry in entries.items()], {}

    def route_resolve(self, repo, rev, path):
        """`hf_hub_download` / transformers `cached_file`: HEAD for metadata (X-Repo-Commit, ETag,
        Content-Length), then GET for the bytes. An LFS file also gets `X-Linked-Etag` (its sha256, which the
        client prefers to the pointer's ETag and names the cached blob by) and `X-Linked-Size`. A missing
        file is a 404 `EntryNotFound` that still carries `X-Repo-Commit`, so the client can cache the
        absence (`.no_exist`), as transformers relies on."""
        r = self.server.repo(repo, self.authorized)
        sha = r.resolve(rev)
        oid = r.commits[sha].get(path)
        if oid is None:
            raise HubError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": sha})
        headers = {
            "X-Repo-Commit": sha,
            "ETag": f'"{oid}"',
            "Content-Type": mimetypes.guess_type(path)[0] or "application/octet-stream",
            "Content-Disposition": f'inline; filename="{path.rsplit("/", 1)[-1]}"',
        }
        lfs = self.server.lfs_pointers.get(oid)
        if lfs is not None:
            headers.update({"X-Linked-Etag": f'"{lfs[0]}"', "X-Linked-Size": str(lfs[1])})
        return 200, self.server.file_content(oid), headers


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


def hub_env(endpoint: str, tmp_path: str | os.PathLike, *, disable_xet: bool = True) -> dict[str, str]:
    """Environment for a client subprocess talking to `endpoint` with fresh caches under `tmp_path`.

    It is `os.environ` without any `HF_*`/`HUGGINGFACE_*`/`TRANSFORMERS_*` variable (so neither the test
    session's `HF_HUB_OFFLINE=1` nor a developer's real token or cache leak in), plus: `HF_ENDPOINT`,
    `HF_HUB_OFFLINE=0`, `HF_HOME` and `HF_MODULES_CACHE` under `tmp_path`, `HF_TOKEN=test-token`,
    telemetry and progress bars off, `NO_PROXY` for 127.0.0.1, and `src/` on `PYTHONPATH`.

    `disable_xet=True` (the default) sets `HF_HUB_DISABLE_XET=1`: with hf_xet installed, `upload_folder` and
    `create_commit` otherwise send every LFS file (weights, images) to Xet storage, which this server does not
    implement; with it they use the LFS batch API, and `upload_folder` the single `create_commit`.
    `disable_xet=False` keeps the hf_xet pipelined `upload_folder`: only for folders of text files, which all
    go as regular files.
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
