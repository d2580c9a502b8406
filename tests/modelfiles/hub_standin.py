"""A stand-in for the Hugging Face Hub's file endpoints on loopback (the real Hub is unreachable).

The fetch is tested with the official ``huggingface_hub`` client pointed at this server through
``HF_ENDPOINT``, so the client's own code (HEAD metadata, redirect handling, ``http_get``'s
Range resume) runs exactly as against the Hub. What it mirrors of the real Hub, as
huggingface_hub 2.x's ``file_download.py`` relies on it:

- ``HEAD`` and ``GET /{owner}/{repo}/resolve/{revision}/{file}``: for an LFS file the Hub
  answers ``302 Found`` with ``Location`` set to a signed URL on a storage host (here: a second
  server on another port, so another origin), and the file's metadata on that redirect
  response: ``X-Repo-Commit`` (the commit the revision resolves to), ``X-Linked-Etag`` (the
  quoted LFS sha256), ``X-Linked-Size`` (bytes), ``ETag`` (the quoted git oid of the LFS
  pointer), ``Accept-Ranges: bytes``. The client does not follow that redirect for the HEAD
  (the metadata is on it) and downloads from ``Location``.
- Revisions: a full commit or a branch name (``main``) resolve to the commit; anything else is
  ``404`` with ``X-Error-Code: RevisionNotFound``; an unknown file ``404`` with
  ``X-Error-Code: EntryNotFound``; a gated repo without a valid ``Authorization: Bearer``
  token ``401`` with ``X-Error-Code: GatedRepo`` (the codes ``hf_raise_for_status`` maps to
  ``RevisionNotFoundError``, ``EntryNotFoundError``, ``GatedRepoError``).
- Storage host: ``GET /blobs/{sha256}`` serves the bytes with ``Content-Length`` and
  ``Accept-Ranges: bytes``; ``Range: bytes=<start>-`` gets ``206 Partial Content`` with
  ``Content-Range: bytes <start>-<last>/<size>``; a start past the end gets ``416``.

Faults, for the tests: ``cut_next_download_after(n)`` sends the next blob GET's headers (full
``Content-Length``) and only ``n`` body bytes, then drops the connection, as a flaky link does;
a file may be registered with ``served`` bytes that differ from the ``content`` its metadata
describes (a storage host returning the wrong bytes).

Every request is recorded (method, path, Range, Authorization) so tests can say what went over
the wire. Not mirrored: Xet storage headers (the client then downloads over plain HTTP, as it
does without ``hf_xet``), non-LFS files (``ETag`` only), the ``/api`` endpoints, rate limits.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from aiohttp import web

_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass(frozen=True)
class HubFile:
    """One LFS file in one repo at one commit (reachable also through `branch`)."""

    repo: str
    commit: str
    name: str
    content: bytes
    served: bytes | None = None  # what the storage host sends, when it must differ
    branch: str = "main"
    gated: bool = False

    @property
    def sha256(self) -> str:
        """The LFS oid: sha256 of the content the metadata describes."""
        return hashlib.sha256(self.content).hexdigest()

    @property
    def pointer_oid(self) -> str:
        """Git oid of the LFS pointer file: what the Hub's plain ETag is for an LFS file."""
        pointer = (
            "version https://git-lfs.github.com/spec/v1\n"
            f"oid sha256:{self.sha256}\nsize {len(self.content)}\n"
        ).encode()
        return hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()


@dataclass(frozen=True)
class Recorded:
    """One request as the stand-in saw it."""

    server: str  # "hub" or "storage"
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class HubStandIn:
    """The Hub (resolve endpoint) and its storage host, with fault injection and a log."""

    files: list[HubFile] = field(default_factory=list)
    tokens: frozenset[str] = frozenset({"hf_test_token"})
    requests: list[Recorded] = field(default_factory=list)
    storage_url: str = ""  # set once the storage server listens
    _cut_after: int | None = None

    def add(self, file: HubFile) -> HubFile:
        """Serve `file`; returns it."""
        self.files.append(file)
        return file

    def cut_next_download_after(self, n: int) -> None:
        """The next blob GET sends `n` body bytes and then drops the connection."""
        self._cut_after = n

    def downloads(self) -> list[Recorded]:
        """The GETs of the storage host (each one a download or a resumed part of one)."""
        return [r for r in self.requests if r.server == "storage" and r.method == "GET"]

    # --- the Hub -----------------------------------------------------------------------

    def hub_app(self) -> web.Application:
        """The Hub: HEAD/GET /{owner}/{repo}/resolve/{revision}/{file}."""
        app = web.Application()
        route = "/{owner}/{repo}/resolve/{revision}/{name}"
        app.router.add_route("HEAD", route, self._resolve)
        app.router.add_route("GET", route, self._resolve, name="resolve-get")
        return app

    async def _resolve(self, request: web.Request) -> web.Response:
        self._record("hub", request)
        repo = f"{request.match_info['owner']}/{request.match_info['repo']}"
        revision, name = request.match_info["revision"], request.match_info["name"]
        in_repo = [f for f in self.files if f.repo == repo]
        if not in_repo:
            return _error(404, "RepoNotFound", "Repository not found")
        if any(f.gated for f in in_repo) and not self._authorized(request):
            return _error(401, "GatedRepo", f"Access to model {repo} is restricted.")
        commits = {f.commit for f in in_repo if revision in (f.commit, f.branch)}
        if not commits:
            return _error(404, "RevisionNotFound", "Invalid rev id")
        (commit,) = commits
        match = [f for f in in_repo if f.commit == commit and f.name == name]
        if not match:
            return _error(404, "EntryNotFound", f"{name} does not exist", commit=commit)
        (file,) = match
        return web.Response(
            status=302,
            headers={
                "Location": f"{self.storage_url}/blobs/{file.sha256}?signature=standin",
                "X-Repo-Commit": commit,
                "X-Linked-Etag": f'"{file.sha256}"',
                "X-Linked-Size": str(len(file.content)),
                "ETag": f'"{file.pointer_oid}"',
                "Accept-Ranges": "bytes",
            },
        )

    def _authorized(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        return header.startswith("Bearer ") and header.removeprefix("Bearer ") in self.tokens

    # --- the storage host --------------------------------------------------------------

    def storage_app(self) -> web.Application:
        """The storage host: GET /blobs/{sha256} with Range support."""
        app = web.Application()
        app.router.add_get("/blobs/{sha256}", self._blob)
        return app

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        self._record("storage", request)
        found = [f for f in self.files if f.sha256 == request.match_info["sha256"]]
        if not found:
            return web.Response(status=404, text="NoSuchKey")
        body = found[0].served if found[0].served is not None else found[0].content
        start, status = 0, 200
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        wanted = request.headers.get("Range")
        if wanted is not None:
            parsed = _RANGE.match(wanted)
            if parsed is None or int(parsed.group(1)) >= len(body):
                return web.Response(status=416, headers={"Content-Range": f"bytes */{len(body)}"})
            start, status = int(parsed.group(1)), 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        if request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(body) - start
        await response.prepare(request)
        cut, self._cut_after = self._cut_after, None
        if cut is not None:
            await response.write(body[start : start + cut])
            assert request.transport is not None
            request.transport.close()  # the rest of the promised body never comes
            return response
        await response.write(body[start:])
        await response.write_eof()
        return response

    def _record(self, server: str, request: web.Request) -> None:
        self.requests.append(
            Recorded(
                server,
                request.method,
                request.path,
                request.headers.get("Range"),
                request.headers.get("Authorization"),
            )
        )


def _error(status: int, code: str, message: str, commit: str | None = None) -> web.Response:
    headers = {"X-Error-Code": code, "X-Error-Message": message}
    if commit is not None:
        headers["X-Repo-Commit"] = commit
    return web.json_response({"error": message}, status=status, headers=headers)
