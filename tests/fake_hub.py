"""An in-process fake of the Hugging Face Hub HTTP API, for testing pushes and downloads without a network.

`FakeHub` keeps repositories, commits and files in memory and answers the requests that huggingface_hub and
transformers send to create a repo, commit files, list them and download them. It is served through an
`httpx2.MockTransport`, installed as huggingface_hub's client factory for the duration of a `with` block, so the
real client code (HfApi, hf_hub_download, snapshot_download, from_pretrained) runs unchanged. Every request is
recorded, and requests the fake does not know are recorded in `unhandled` so tests can require there are none.
"""

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field

import httpx2
from huggingface_hub import ModelCard
from huggingface_hub.utils import _http as hf_http
from huggingface_hub.utils import set_async_client_factory, set_client_factory

_REPO = r"(?P<repo_id>[^/]+/[^/]+)"
# Model repositories are read and written; Spaces (`cxrgen push --space`) are only created and committed to.
_KIND = r"(?P<kind>models|spaces)"
_ROUTES = [
    ("POST", re.compile(r"/api/repos/create"), "_create_repo"),
    ("POST", re.compile(r"/api/validate-yaml"), "_validate_yaml"),
    ("GET", re.compile(r"/api/agent-harnesses"), "_agent_harnesses"),
    ("GET", re.compile(rf"/api/models/{_REPO}(/revision/(?P<revision>[^/]+))?"), "_model_info"),
    ("POST", re.compile(rf"/api/{_KIND}/{_REPO}/preupload/(?P<revision>[^/]+)"), "_preupload"),
    ("POST", re.compile(rf"/api/{_KIND}/{_REPO}/commit/(?P<revision>[^/]+)"), "_commit"),
    ("GET", re.compile(rf"/api/models/{_REPO}/tree/(?P<revision>[^/]+)(/(?P<path>.+))?"), "_tree"),
    ("GET", re.compile(rf"/{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)"), "_resolve"),
    ("HEAD", re.compile(rf"/{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)"), "_resolve"),
]


def git_blob_oid(content):
    """The git object id of a file's content: what the Hub serves as a regular file's ETag and oid."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    oid: str
    message: str
    files: dict  # path in repo -> bytes


@dataclass
class FakeRepo:
    private: bool
    commits: list = field(default_factory=list)
    sdk: str | None = None

    @property
    def head(self):
        return self.commits[-1]

    def at(self, revision):
        """The commit a revision names ("main" or a commit oid), or None."""
        if revision == "main":
            return self.head
        return next((commit for commit in self.commits if commit.oid == revision), None)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    authorized: bool


class FakeHub:
    """In-memory Hub served over httpx2.MockTransport; use as `with FakeHub(token) as hub:`.

    Writes (create repo, commit) need `Authorization: Bearer <token>`; so do reads of private repos.
    """

    def __init__(self, token):
        self.token = token
        self.repos = {}
        self.spaces = {}  # repo id -> FakeRepo; FakeRepo.sdk says which Space SDK it was created with
        self.requests = []
        self.unhandled = []
        self._lock = threading.Lock()
        self._previous_factories = None

    def __enter__(self):
        # huggingface_hub has no getter for the installed factories: read them to restore them on exit.
        self._previous_factories = (hf_http._GLOBAL_CLIENT_FACTORY, hf_http._GLOBAL_ASYNC_CLIENT_FACTORY)
        set_client_factory(self._client)
        set_async_client_factory(self._async_client)
        return self

    def __exit__(self, *exc_info):
        previous_client, previous_async_client = self._previous_factories
        set_client_factory(previous_client)
        set_async_client_factory(previous_async_client)
        return False

    def files(self, repo_id, revision="main"):
        """The files of a repo at a revision, as {path: bytes}."""
        return dict(self.repos[repo_id].at(revision).files)

    def downloaded(self, repo_id):
        """Paths of the files of `repo_id` fetched with GET .../resolve/..., in request order."""
        prefix = f"/{repo_id}/resolve/"
        return [
            request.path[len(prefix) :].split("/", 1)[1]
            for request in self.requests
            if request.method == "GET" and request.path.startswith(prefix)
        ]

    def _client(self):
        # The request hook is huggingface_hub's own: it enforces HF_HUB_OFFLINE exactly as the default client does.
        return httpx2.Client(
            transport=httpx2.MockTransport(self.handle),
            event_hooks={"request": [hf_http.hf_request_event_hook]},
            follow_redirects=True,
            timeout=None,
        )

    def _async_client(self):
        return httpx2.AsyncClient(transport=httpx2.MockTransport(self.handle), follow_redirects=True, timeout=None)

    def handle(self, request):
        """Answer one HTTP request from the in-memory store."""
        path = request.url.path
        with self._lock:
            self.requests.append(RecordedRequest(request.method, path, self._authorized(request)))
            for method, pattern, handler_name in _ROUTES:
                match = pattern.fullmatch(path)
                if method == request.method and match:
                    return getattr(self, handler_name)(request, **match.groupdict())
            self.unhandled.append(f"{request.method} {request.url}")
            return httpx2.Response(501, text=f"FakeHub does not implement {request.method} {path}")

    def _authorized(self, request):
        return request.headers.get("authorization") == f"Bearer {self.token}"

    def _repo_for_read(self, request, repo_id, kind="models"):
        """The repo, or an error response as the Hub gives it (private repos look absent without the token)."""
        repo = (self.spaces if kind == "spaces" else self.repos).get(repo_id)
        if repo is None or (repo.private and not self._authorized(request)):
            return None, _error(404, "RepoNotFound", f"Repository {repo_id} not found")
        return repo, None

    def _commit_for_read(self, request, repo_id, revision, kind="models"):
        repo, error = self._repo_for_read(request, repo_id, kind)
        if error is not None:
            return None, error
        commit = repo.at(revision)
        if commit is None:
            return None, _error(404, "RevisionNotFound", f"Revision {revision} not found in {repo_id}")
        return commit, None

    def _create_repo(self, request):
        if not self._authorized(request):
            return _error(401, None, "Invalid credentials in Authorization header")
        payload = json.loads(request.content)
        repo_type = payload.get("type", "model")
        if repo_type not in ("model", "space"):
            return _error(400, None, "FakeHub only hosts model repositories and Spaces")
        if repo_type == "space" and not payload.get("sdk"):
            return _error(400, None, "A Space needs an sdk")
        store = self.spaces if repo_type == "space" else self.repos
        if not payload.get("organization"):
            return _error(400, None, "FakeHub needs repo ids of the form namespace/name")
        visibility = payload.get("visibility", "public")
        if visibility not in ("public", "private"):
            return _error(400, None, f"FakeHub does not support visibility {visibility!r}")
        repo_id = f"{payload['organization']}/{payload['name']}"
        url = f"{_endpoint(request)}/{'spaces/' if repo_type == 'space' else ''}{repo_id}"
        if repo_id in store:
            return httpx2.Response(409, json={"error": f"You already created this {repo_type} repo", "url": url})
        initial = Commit(_commit_oid(repo_id, "initial commit", {}), "initial commit", {})
        store[repo_id] = FakeRepo(private=visibility == "private", commits=[initial], sdk=payload.get("sdk"))
        return httpx2.Response(200, json={"url": url, "name": repo_id})

    def _validate_yaml(self, request):
        content = json.loads(request.content)["content"]
        try:
            ModelCard(content, ignore_metadata_errors=False)
        except Exception as error:  # the Hub answers any invalid metadata with a 400 listing the errors
            return httpx2.Response(400, json={"errors": [{"message": str(error)}]})
        return httpx2.Response(200, json={"warnings": []})

    def _agent_harnesses(self, request):
        return httpx2.Response(200, json={"standardEnvVars": [], "harnesses": {}})

    def _model_info(self, request, repo_id, revision=None):
        commit, error = self._commit_for_read(request, repo_id, revision or "main")
        if error is not None:
            return error
        info = {
            "id": repo_id,
            "sha": commit.oid,
            "private": self.repos[repo_id].private,
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
        }
        if "README.md" in commit.files:
            card_data = ModelCard(commit.files["README.md"].decode("utf-8")).data.to_dict()
            info.update(
                cardData=card_data,
                tags=card_data.get("tags", []),
                pipeline_tag=card_data.get("pipeline_tag"),
                library_name=card_data.get("library_name"),
            )
        return httpx2.Response(200, json=info)

    def _preupload(self, request, kind, repo_id, revision):
        if not self._authorized(request):
            return _error(401, None, "Invalid credentials in Authorization header")
        commit, error = self._commit_for_read(request, repo_id, revision, kind)
        if error is not None:
            return error
        # "regular" for every file keeps uploads inside the commit call: no LFS or Xet storage to fake.
        files = [
            {
                "path": item["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_oid(commit.files[item["path"]]) if item["path"] in commit.files else None,
            }
            for item in json.loads(request.content)["files"]
        ]
        return httpx2.Response(200, json={"files": files})

    def _commit(self, request, kind, repo_id, revision):
        if not self._authorized(request):
            return _error(401, None, "Invalid credentials in Authorization header")
        repo, error = self._repo_for_read(request, repo_id, kind)
        if error is not None:
            return error
        if revision != "main":
            return _error(400, None, "FakeHub only commits to main")
        lines = [json.loads(line) for line in request.content.splitlines() if line.strip()]
        header = lines[0]["value"]
        parent = header.get("parentCommit")
        if parent is not None and parent != repo.head.oid:
            return _error(412, None, f"parentCommit {parent} is not the head of main")
        files = dict(repo.head.files)
        for line in lines[1:]:
            key, value = line["key"], line["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: c for p, c in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                return _error(400, None, f"FakeHub does not support commit operation {key!r}")
        oid = _commit_oid(repo.head.oid, header["summary"], files)
        repo.commits.append(Commit(oid, header["summary"], files))
        prefix = "spaces/" if kind == "spaces" else ""
        commit_url = f"{_endpoint(request)}/{prefix}{repo_id}/commit/{oid}"
        return httpx2.Response(200, json={"commitUrl": commit_url, "commitOid": oid, "pullRequestUrl": None})

    def _tree(self, request, repo_id, revision, path=None):
        commit, error = self._commit_for_read(request, repo_id, revision)
        if error is not None:
            return error
        prefix = f"{path.rstrip('/')}/" if path else ""
        below = sorted(p for p in commit.files if p.startswith(prefix))
        if path and not below:
            return _error(404, "EntryNotFound", f"{path} does not exist in {repo_id} at {revision}")
        recursive = request.url.params.get("recursive", "false").lower() in ("1", "true")
        entries, folders = [], set()
        for file_path in below:
            parts = file_path[len(prefix) :].split("/")
            for depth in range(1, len(parts)):
                folders.add(prefix + "/".join(parts[:depth]))
            if recursive or len(parts) == 1:
                content = commit.files[file_path]
                entries.append({"type": "file", "path": file_path, "size": len(content), "oid": git_blob_oid(content)})
        for folder in sorted(folders):
            if recursive or "/" not in folder[len(prefix) :]:
                tree_oid = hashlib.sha1(f"tree {commit.oid} {folder}".encode()).hexdigest()
                entries.append({"type": "directory", "path": folder, "size": 0, "oid": tree_oid})
        return httpx2.Response(200, json=entries)

    def _resolve(self, request, repo_id, revision, path):
        commit, error = self._commit_for_read(request, repo_id, revision)
        if error is not None:
            return error
        if path not in commit.files:
            return _error(404, "EntryNotFound", f"{path} does not exist in {repo_id} at {revision}", commit.oid)
        content = commit.files[path]
        # Downloads are cached by ETag: it must differ per content, as the Hub's does.
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{git_blob_oid(content)}"',
            "Content-Length": str(len(content)),
        }
        return httpx2.Response(200, headers=headers, content=content if request.method == "GET" else b"")


def _endpoint(request):
    return f"{request.url.scheme}://{request.url.netloc.decode()}"


def _commit_oid(parent, message, files):
    listing = "".join(f"{path}\0{git_blob_oid(content)}\n" for path, content in sorted(files.items()))
    return hashlib.sha1(f"commit {parent}\n{message}\n{listing}".encode()).hexdigest()


def _error(status, error_code, message, commit_oid=None):
    """An error response with the headers huggingface_hub turns into its typed errors."""
    headers = {"X-Error-Message": message}
    if error_code is not None:
        headers["X-Error-Code"] = error_code
    if commit_oid is not None:
        headers["X-Repo-Commit"] = commit_oid
    return httpx2.Response(status, headers=headers, json={"error": message})
