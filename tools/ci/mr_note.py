"""One preview note per key on a merge or pull request, updated in place on every push
(standard library only); GitLab merge requests and Gitea pull requests.

The preview jobs (``.gitlab-ci.yml``, ``.woodpecker/preview.yml``) post ``pulumi preview``
as a note. A new note per push would bury the discussion, so each note starts with a
hidden marker, ``<!-- forgeway-preview:prod -->``; the next run finds the note carrying it
and edits that note instead of adding another::

    python -m tools.ci.mr_note [--forge gitea] --marker forgeway-preview:prod \\
        --title "pulumi preview on prod" --section "Offline plan" plan.txt --section "pulumi preview" preview.txt

GitLab (``--forge gitlab``, the default; ``CI_API_V4_URL``, ``CI_PROJECT_ID``,
``CI_MERGE_REQUEST_IID``): ``GET /user`` (whose notes are ours), ``GET
/projects/:id/merge_requests/:iid/notes`` (all pages, oldest first), then ``PUT
.../notes/:note_id`` or ``POST .../notes``. The token, ``FORGEWAY_NOTE_TOKEN``, is a project
access token (role Reporter, scope ``api``) sent as ``PRIVATE-TOKEN``; not ``CI_JOB_TOKEN``,
which cannot write merge-request notes (gitlab-org/gitlab#464591).

Gitea (``--forge gitea``, in a Woodpecker pipeline: ``CI_FORGE_URL``, ``CI_REPO_OWNER``,
``CI_REPO_NAME``, ``CI_COMMIT_PULL_REQUEST``): ``GET /api/v1/user``, ``GET
/api/v1/repos/{owner}/{repo}/issues/{index}/comments`` (every comment of the pull request
in one answer: the endpoint has no paging), then ``PATCH .../issues/comments/{id}`` or
``POST .../issues/{index}/comments``. The token, ``FORGEWAY_NOTE_TOKEN`` (a Woodpecker
secret), is a Gitea access token (scopes ``write:issue`` and ``read:user``) sent as
``Authorization: token ...``.

Either way the token travels only in that header: never in a URL, never in output, and a
redirect is refused rather than followed, so it cannot be carried to another host.

A note holds at most 1,000,000 characters (GitLab's limit on a note's text; the same cut
is kept on Gitea); longer output is cut inside its code block with a line saying how much
was cut and that the job log has all of it.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "NOTE_LIMIT",
    "TOKEN_ENV",
    "GitLab",
    "GitLabMergeRequest",
    "Gitea",
    "GiteaPullRequest",
    "Note",
    "NoteError",
    "Thread",
    "main",
    "marker_comment",
    "render_note",
    "upsert_note",
]

NOTE_LIMIT = 1_000_000  # characters; GitLab refuses a longer note
TOKEN_ENV = "FORGEWAY_NOTE_TOKEN"  # noqa: S105 - the variable's name, not a token
PER_PAGE = 100  # GitLab's maximum page size
MAX_PAGES = 10_000  # a guard against a server that never stops saying X-Next-Page
_MARKER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:._/-]*")
_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


class NoteError(Exception):
    """What went wrong, in one line that never contains the token."""


def marker_comment(marker: str) -> str:
    """The hidden first line that identifies a note: ``<!-- forgeway-preview:prod -->``."""
    # Letters, digits and : . _ / - only: no "--" run or ">" could close the comment early.
    if not _MARKER_RE.fullmatch(marker) or "--" in marker:
        raise NoteError(f"marker {marker!r}: use letters, digits and : . _ / - (no '--'), e.g. forgeway-preview:prod")
    return f"<!-- {marker} -->"


def _fence(text: str) -> str:
    """A backtick fence longer than any backtick run in text, so output cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _cut_notice(omitted: int) -> str:
    return (
        f"\n[... {omitted} characters cut here: forgeway keeps a note to {NOTE_LIMIT:,} characters;"
        " the job log has the full output]"
    )


def _section(title: str, content: str) -> str:
    fence = _fence(content)
    body = content if content.endswith("\n") or not content else content + "\n"
    return f"<details open>\n<summary>{html.escape(title)}</summary>\n\n{fence}text\n{body}{fence}\n\n</details>\n"


def render_note(
    marker: str,
    title: str,
    sections: Sequence[tuple[str, str]],
    *,
    footer: str = "",
    limit: int = NOTE_LIMIT,
) -> str:
    """The note's Markdown: marker, title, one collapsible code block per section, footer.

    Output that does not fit in ``limit`` characters is cut, first section first served,
    each cut block ending with a line that says how many characters are missing.
    """
    cleaned = [(name, _ANSI_RE.sub("", text)) for name, text in sections]
    head = f"{marker_comment(marker)}\n### {title}\n\n"
    tail = f"\n{footer}\n" if footer else ""
    # Room left for the outputs themselves: everything else at its largest (full-length
    # fences, a cut notice per section with the most digits it could need).
    overhead = len(head) + len(tail)
    overhead += sum(len(_section(name, "")) + 2 * len(_fence(text)) + 1 for name, text in cleaned)
    overhead += sum(len(_cut_notice(len(text))) for _, text in cleaned)
    budget = limit - overhead
    if budget < 0:
        raise NoteError(f"the note's title and headings alone exceed {limit} characters")
    parts = [head]
    for name, text in cleaned:
        kept = text if len(text) <= budget else text[:budget] + _cut_notice(len(text) - budget)
        budget -= min(len(text), budget)
        parts.append(_section(name, kept))
    parts.append(tail)
    note = "".join(parts)
    assert len(note) <= limit, f"note is {len(note)} characters, limit {limit}"
    return note


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: a followed redirect could carry the token to another host."""

    def redirect_request(  # noqa: PLR0917 - urllib's own signature
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Message,
        newurl: str,
    ) -> urllib.request.Request | None:
        return None


@dataclass(frozen=True)
class RestApi:
    """A minimal REST client: JSON in, JSON out, the token in one header (:meth:`auth`)."""

    api_url: str  # e.g. https://gitlab.example.org/api/v4, https://git.example.org/api/v1
    token: str
    timeout: float = 30.0
    url_name = "the API URL"  # how the error names api_url

    def __post_init__(self) -> None:
        scheme = urllib.parse.urlsplit(self.api_url).scheme
        if scheme not in ("https", "http"):
            raise NoteError(f"{self.url_name} {self.api_url!r}: expected an http(s) URL")

    def auth(self) -> tuple[str, str]:
        raise NotImplementedError

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str | int] | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> tuple[Any, Message]:
        url = self.api_url.rstrip("/") + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 - scheme checked above
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        # Unredirected: urllib does not copy it onto a redirect (which we refuse anyway).
        req.add_unredirected_header(*self.auth())
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(req, timeout=self.timeout) as resp:
                raw = resp.read()
                headers = resp.headers
        except urllib.error.HTTPError as err:
            detail = err.read(300).decode(errors="replace").strip()
            raise NoteError(f"{method} {url}: HTTP {err.code} {err.reason}: {detail}") from None
        except (urllib.error.URLError, OSError) as err:
            raise NoteError(f"{method} {url}: {err}") from None
        try:
            return (json.loads(raw) if raw else None), headers
        except ValueError:
            raise NoteError(f"{method} {url}: the answer is not JSON") from None


@dataclass(frozen=True)
class GitLab(RestApi):
    """GitLab REST v4 (``CI_API_V4_URL``); the token as ``PRIVATE-TOKEN``."""

    url_name = "CI_API_V4_URL"

    def auth(self) -> tuple[str, str]:
        return "PRIVATE-TOKEN", self.token


@dataclass(frozen=True)
class Gitea(RestApi):
    """Gitea's API v1 (``<CI_FORGE_URL>/api/v1``); the token as ``Authorization: token ...``."""

    url_name = "CI_FORGE_URL"

    def auth(self) -> tuple[str, str]:
        return "Authorization", f"token {self.token}"


@dataclass(frozen=True)
class Note:
    """A note or comment as the thread lists it: who wrote it, and whether the forge did."""

    id: int
    author: object
    body: str
    system: bool = False


class Thread(Protocol):
    """Where the notes live: a GitLab merge request or a Gitea pull request."""

    @property
    def where(self) -> str: ...  # "merge request !5", for the one line mr_note prints

    def me(self) -> object: ...  # the token's user id: only its notes are ours

    def notes(self) -> Iterator[Note]: ...  # oldest first

    def edit(self, note_id: int, body: str) -> None: ...

    def post(self, body: str) -> int: ...


def _user_id(api: RestApi) -> object:
    me, _ = api.request("GET", "/user")
    return me.get("id") if isinstance(me, dict) else None


def _created_id(created: object) -> int:
    if not isinstance(created, dict) or "id" not in created:
        raise NoteError("creating the note: the answer has no note id")
    return int(created["id"])


@dataclass(frozen=True)
class GitLabMergeRequest:
    api: GitLab
    project_id: str
    mr_iid: str

    @property
    def where(self) -> str:
        return f"merge request !{self.mr_iid}"

    @property
    def _path(self) -> str:
        project, mr = urllib.parse.quote(self.project_id, safe=""), urllib.parse.quote(self.mr_iid, safe="")
        return f"/projects/{project}/merge_requests/{mr}/notes"

    def me(self) -> object:
        return _user_id(self.api)

    def notes(self) -> Iterator[Note]:
        """Every note on the merge request, oldest first, following X-Next-Page."""
        page = 1
        for _ in range(MAX_PAGES):
            query: dict[str, str | int] = {"per_page": PER_PAGE, "page": page, "sort": "asc", "order_by": "created_at"}
            notes, headers = self.api.request("GET", self._path, query=query)
            if not isinstance(notes, list):
                raise NoteError("listing notes: expected a JSON list")
            for n in notes:
                if isinstance(n, dict):
                    author = (n.get("author") or {}).get("id")
                    yield Note(int(n["id"]), author, str(n.get("body", "")), bool(n.get("system")))
            following = (headers.get("X-Next-Page") or "").strip()
            if not following:
                return
            page = int(following)
        raise NoteError(f"listing notes: more than {MAX_PAGES} pages")

    def edit(self, note_id: int, body: str) -> None:
        self.api.request("PUT", f"{self._path}/{note_id}", payload={"body": body})

    def post(self, body: str) -> int:
        created, _ = self.api.request("POST", self._path, payload={"body": body})
        return _created_id(created)


@dataclass(frozen=True)
class GiteaPullRequest:
    api: Gitea
    owner: str
    repo: str
    index: str

    @property
    def where(self) -> str:
        return f"pull request #{self.index}"

    @property
    def _repo(self) -> str:
        owner, repo = (urllib.parse.quote(x, safe="") for x in (self.owner, self.repo))
        return f"/repos/{owner}/{repo}/issues"

    def me(self) -> object:
        return _user_id(self.api)

    def notes(self) -> Iterator[Note]:
        """Every comment on the pull request (an issue to Gitea's API), oldest first, in one answer."""
        index = urllib.parse.quote(self.index, safe="")
        comments, _ = self.api.request("GET", f"{self._repo}/{index}/comments")
        if not isinstance(comments, list):
            raise NoteError("listing comments: expected a JSON list")
        for c in comments:
            if isinstance(c, dict):
                yield Note(int(c["id"]), (c.get("user") or {}).get("id"), str(c.get("body", "")))

    def edit(self, note_id: int, body: str) -> None:
        self.api.request("PATCH", f"{self._repo}/comments/{note_id}", payload={"body": body})

    def post(self, body: str) -> int:
        index = urllib.parse.quote(self.index, safe="")
        created, _ = self.api.request("POST", f"{self._repo}/{index}/comments", payload={"body": body})
        return _created_id(created)


def upsert_note(thread: Thread, marker: str, body: str) -> tuple[str, int]:
    """Update our note that starts with the marker, or create it. Returns (action, note id)."""
    tag = marker_comment(marker)
    if not body.startswith(tag):
        raise NoteError(f"the note must start with {tag}, or the next run cannot find it")
    my_id = thread.me()
    found = next(
        # Ours only: anyone may quote the marker, and only its author can edit a note.
        (n for n in thread.notes() if not n.system and n.author == my_id and n.body.startswith(tag)),
        None,
    )
    if found is not None:
        thread.edit(found.id, body)
        return "updated", found.id
    return "created", thread.post(body)


@dataclass(frozen=True)
class CiEnv:
    """What one CI system says about the job: where the footer's links come from."""

    sha: str  # variable holding the commit (shortened to 8)
    job_url: str
    pipeline_url: str


GITLAB_CI = CiEnv("CI_COMMIT_SHORT_SHA", "CI_JOB_URL", "CI_PIPELINE_URL")
WOODPECKER = CiEnv("CI_COMMIT_SHA", "CI_STEP_URL", "CI_PIPELINE_URL")


def _footer(env: Mapping[str, str], ci: CiEnv = GITLAB_CI) -> str:
    bits = []
    if sha := env.get(ci.sha):
        bits.append(f"commit `{sha[:8]}`")
    if job := env.get(ci.job_url):
        bits.append(f"[job log]({job})")
    if pipeline := env.get(ci.pipeline_url):
        bits.append(f"[pipeline]({pipeline})")
    return f"<sub>{' · '.join(bits)}</sub>" if bits else ""


def _require(env: Mapping[str, str], name: str, why: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise NoteError(f"{name} is not set: {why}")
    return value


def _thread(forge: str, env: Mapping[str, str]) -> Thread:
    """The merge or pull request this job previews, from the CI system's variables."""
    if forge == "gitea":
        woodpecker = "run inside a Woodpecker pipeline"
        api = Gitea(
            _require(env, "CI_FORGE_URL", woodpecker).rstrip("/") + "/api/v1",
            _require(env, TOKEN_ENV, "give the step a Woodpecker secret (a Gitea token: write:issue, read:user)"),
        )
        return GiteaPullRequest(
            api,
            _require(env, "CI_REPO_OWNER", woodpecker),
            _require(env, "CI_REPO_NAME", woodpecker),
            _require(env, "CI_COMMIT_PULL_REQUEST", "run on a pull_request event"),
        )
    gitlab = GitLab(
        _require(env, "CI_API_V4_URL", "run inside a GitLab CI job"),
        _require(env, TOKEN_ENV, "define it as a masked CI/CD variable (a project access token, scope api)"),
    )
    return GitLabMergeRequest(
        gitlab,
        _require(env, "CI_PROJECT_ID", "run inside a GitLab CI job"),
        _require(env, "CI_MERGE_REQUEST_IID", "run in a merge-request pipeline"),
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    parser = argparse.ArgumentParser(prog="python -m tools.ci.mr_note", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--forge",
        choices=("gitlab", "gitea"),
        default="gitlab",
        help="gitlab: a merge request, from GitLab CI; gitea: a pull request, from Woodpecker",
    )
    parser.add_argument("--marker", required=True, help="note key, e.g. forgeway-preview:prod")
    parser.add_argument("--title", required=True, help="the note's heading (Markdown)")
    parser.add_argument(
        "--section",
        nargs=2,
        action="append",
        default=[],
        metavar=("TITLE", "FILE"),
        help="a collapsible code block of FILE's text; repeat for more",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the note instead of posting it")
    args = parser.parse_args(argv)
    try:
        sections = []
        for name, path in args.section:
            try:
                sections.append((name, Path(path).read_text(errors="replace")))
            except OSError as err:
                raise NoteError(f"section {name!r}: cannot read {path}: {err.strerror}") from None
        ci = WOODPECKER if args.forge == "gitea" else GITLAB_CI
        body = render_note(args.marker, args.title, sections, footer=_footer(env, ci))
        if args.dry_run:
            sys.stdout.write(body)
            return 0
        thread = _thread(args.forge, env)
        action, note_id = upsert_note(thread, args.marker, body)
    except NoteError as err:
        print(f"mr_note: {err}", file=sys.stderr)
        return 1
    print(f"mr_note: {action} note {note_id} on {thread.where} ({len(body)} characters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
