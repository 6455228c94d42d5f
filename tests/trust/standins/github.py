"""A GitHub stand-in on loopback: the REST API v3 and the OAuth device flow as GitHub's docs
describe them (paths, status codes, headers, JSON shapes, Link pagination, ETag/304, rate-limit
headers), for the few endpoints Polykey uses. Test code: the product talks to it exactly as to
github.com, only the base URL differs.

A test drives it through its state (users, gists, device grants) and, for hostile cases, with
``queue`` (canned replies served before the real ones) and ``hostile`` (a path answered by a
function writing raw bytes).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.standin_http import LocalHttp

MAX_CONTENT = 1_000_000  # GitHub's API gives up to 1 MB of a file's content


@dataclass
class Gist:
    id: str
    owner: str
    description: str
    public: bool
    files: dict[str, str]
    created: int


@dataclass
class Grant:
    """A device code's future: ``script`` is what each poll answers ("authorization_pending",
    "slow_down", "access_denied", "expired_token"), then the token is granted."""

    device_code: str
    user_code: str
    login: str
    script: list[str]
    interval: int = 5
    issued: bool = False


@dataclass
class Canned:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: object = None


class GitHubStandIn:
    def __init__(self, client_id: str = "Iv1.standin0000000") -> None:
        self.client_id = client_id
        self.tokens: dict[str, str] = {}  # token -> login
        self.logins: set[str] = set()
        self.gists: dict[str, Gist] = {}
        self.grants: dict[str, Grant] = {}
        self.queue: list[Canned] = []
        self.hostile: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {}
        self.log: list[tuple[str, str, dict[str, str]]] = []  # method, path, headers
        self.page_size_cap = 100
        self.stopping = threading.Event()
        self._clock = 1_700_000_000
        self.http = LocalHttp(self, _Handler)
        self.server = self.http.server

    @property
    def url(self) -> str:
        return self.http.url

    def start(self) -> GitHubStandIn:
        self.http.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.http.stop()

    # --- state ----------------------------------------------------------------------------------

    def add_user(self, login: str) -> str:
        """A user and a token of theirs."""
        self.logins.add(login)
        token = "gho_" + secrets.token_hex(18)
        self.tokens[token] = login
        return token

    def add_gist(self, owner: str, files: dict[str, str], description: str = "") -> str:
        self.logins.add(owner)
        self._clock += 1
        gist_id = secrets.token_hex(16)
        self.gists[gist_id] = Gist(gist_id, owner, description, True, dict(files), self._clock)
        return gist_id

    def grant(self, login: str, script: list[str], interval: int = 5) -> None:
        """The next device code asked for answers its polls with ``script``, then a token."""
        code = secrets.token_hex(20)
        self.grants[code] = Grant(code, "WDJB-MJHT", login, list(script), interval)

    # --- JSON shapes ----------------------------------------------------------------------------

    def owner_json(self, login: str) -> dict[str, Any]:
        uid = int(hashlib.sha256(login.encode()).hexdigest()[:6], 16)
        return {
            "login": login,
            "id": uid,
            "node_id": f"MDQ6VXNlcj{uid}",
            "avatar_url": f"{self.url}/avatars/{login}",
            "url": f"{self.url}/users/{login}",
            "html_url": f"{self.url}/{login}",
            "type": "User",
            "site_admin": False,
        }

    def gist_json(self, gist: Gist, *, content: bool) -> dict[str, Any]:
        files: dict[str, Any] = {}
        for name, text in gist.files.items():
            raw = text.encode()
            entry: dict[str, Any] = {
                "filename": name,
                "type": "text/markdown",
                "language": "Markdown",
                "raw_url": f"{self.url}/raw/{gist.owner}/{gist.id}/{name}",
                "size": len(raw),
            }
            if content:
                entry["truncated"] = len(raw) > MAX_CONTENT
                entry["content"] = raw[:MAX_CONTENT].decode(errors="ignore")
            files[name] = entry
        stamp = f"2023-11-14T22:{gist.created % 60:02d}:00Z"
        return {
            "url": f"{self.url}/gists/{gist.id}",
            "id": gist.id,
            "node_id": "G_kwDO" + gist.id[:10],
            "html_url": f"{self.url}/gist/{gist.id}",
            "files": files,
            "public": gist.public,
            "created_at": stamp,
            "updated_at": stamp,
            "description": gist.description,
            "comments": 0,
            "user": None,
            "owner": self.owner_json(gist.owner),
            "truncated": False,
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # headers and body leave in one write (no delayed-ACK stall)
    server: ThreadingHTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def gh(self) -> GitHubStandIn:
        return self.server.standin  # type: ignore[attr-defined, no-any-return]

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    # --- plumbing -------------------------------------------------------------------------------

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        self.gh.log.append((method, self.path, {k.lower(): v for k, v in self.headers.items()}))
        if parts.path in self.gh.hostile:
            self.gh.hostile[parts.path](self)
            return
        if self.gh.queue:
            canned = self.gh.queue.pop(0)
            self.reply(canned.status, canned.body, canned.headers)
            return
        route = _ROUTES.get((method, _shape(parts.path)))
        if route is None:
            self.reply(404, {"message": "Not Found"})
            return
        route(self, parts.path)

    def reply(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
        raw = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        sent = {"content-type": "application/json; charset=utf-8"}
        if not self.path.startswith("/login/"):
            sent["x-github-api-version-selected"] = "2022-11-28"
            sent |= _rate_headers()
        sent |= {k.lower(): v for k, v in (headers or {}).items()}
        for name, value in sent.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        if status != 304:
            self.wfile.write(raw)

    def login(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        return self.gh.tokens.get(token)

    def unauthorized(self) -> None:
        self.reply(401, {"message": "Requires authentication", "documentation_url": _DOCS})

    def json_body(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            self.reply(400, {"message": "Problems parsing JSON", "documentation_url": _DOCS})
            return None


_DOCS = "https://docs.github.com/rest"


def _rate_headers() -> dict[str, str]:
    return {
        "x-ratelimit-limit": "5000",
        "x-ratelimit-remaining": "4999",
        "x-ratelimit-reset": "1700003600",
        "x-ratelimit-used": "1",
        "x-ratelimit-resource": "core",
    }


def _shape(path: str) -> str:
    """The route a path takes: ids and logins become placeholders."""
    bits = path.strip("/").split("/")
    if len(bits) == 2 and bits[0] == "gists":
        return "/gists/{id}"
    if len(bits) == 3 and bits[0] == "users" and bits[2] == "gists":
        return "/users/{user}/gists"
    return path


# --- the device flow ---------------------------------------------------------------------------


def _form(h: _Handler) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(h.body.decode()).items()}


def _device_code(h: _Handler, path: str) -> None:
    form = _form(h)
    if form.get("client_id") != h.gh.client_id:
        h.reply(401, {"error": "incorrect_client_credentials"})
        return
    pending = [g for g in h.gh.grants.values() if not g.issued]
    if not pending:
        h.reply(200, {"error": "device_flow_disabled"})
        return
    grant = pending[0]
    grant.issued = True
    body = {
        "device_code": grant.device_code,
        "user_code": grant.user_code,
        "verification_uri": f"{h.gh.url}/login/device",
        "expires_in": 900,
        "interval": grant.interval,
    }
    if "application/json" in h.headers.get("Accept", ""):
        h.reply(200, body)
    else:  # GitHub's default: a form-encoded body
        raw = urlencode(body).encode()
        h.send_response(200)
        h.send_header("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
        h.send_header("Content-Length", str(len(raw)))
        h.end_headers()
        h.wfile.write(raw)


def _access_token(h: _Handler, path: str) -> None:
    form = _form(h)
    grant = h.gh.grants.get(form.get("device_code", ""))
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:device_code":
        h.reply(200, {"error": "unsupported_grant_type"})
    elif form.get("client_id") != h.gh.client_id:
        h.reply(200, {"error": "incorrect_client_credentials"})
    elif grant is None:
        h.reply(200, {"error": "incorrect_device_code"})
    elif grant.script:
        error = grant.script.pop(0)
        body: dict[str, Any] = {"error": error, "error_description": error.replace("_", " ")}
        if error == "slow_down":
            grant.interval += 5
            body["interval"] = grant.interval
        h.reply(200, body)
    else:
        token = "gho_" + secrets.token_hex(18)
        h.gh.tokens[token] = grant.login
        h.gh.logins.add(grant.login)
        del h.gh.grants[grant.device_code]
        h.reply(200, {"access_token": token, "token_type": "bearer", "scope": "gist,read:user"})


# --- the REST API ------------------------------------------------------------------------------


def _user(h: _Handler, path: str) -> None:
    login = h.login()
    if login is None:
        h.unauthorized()
        return
    h.reply(200, h.gh.owner_json(login) | {"name": login.title(), "public_gists": 0})


def _create_gist(h: _Handler, path: str) -> None:
    login = h.login()
    if login is None:
        h.unauthorized()
        return
    body = h.json_body()
    if body is None:
        return
    files = body.get("files") if isinstance(body, dict) else None
    if not isinstance(files, dict) or not files:
        h.reply(422, {"message": "Validation Failed", "errors": [{"code": "missing_field"}]})
        return
    gist_id = h.gh.add_gist(
        login, {k: v["content"] for k, v in files.items()}, body.get("description", "")
    )
    h.gh.gists[gist_id].public = bool(body.get("public", False))
    gist = h.gh.gist_json(h.gh.gists[gist_id], content=True)
    h.reply(201, gist, {"Location": f"{h.gh.url}/gists/{gist_id}"})


def _one_gist(h: _Handler, path: str) -> None:
    gist = h.gh.gists.get(path.rsplit("/", 1)[1])
    if h.command == "GET":
        if gist is None:
            h.reply(404, {"message": "Not Found", "documentation_url": _DOCS})
        else:
            h.reply(200, h.gh.gist_json(gist, content=True))
        return
    login = h.login()
    if login is None:
        h.unauthorized()
    elif gist is None or gist.owner != login:
        h.reply(404, {"message": "Not Found", "documentation_url": _DOCS})
    elif h.command == "DELETE":
        del h.gh.gists[gist.id]
        h.reply(204, None)
    else:
        body = h.json_body()
        if body is None:
            return
        for name, change in body.get("files", {}).items():
            gist.files[name] = change["content"]
        h.reply(200, h.gh.gist_json(gist, content=True))


def _user_gists(h: _Handler, path: str) -> None:
    user = path.strip("/").split("/")[1]
    if user not in h.gh.logins:
        h.reply(404, {"message": "Not Found", "documentation_url": _DOCS})
        return
    per_page = min(int(h.query.get("per_page", "30")), h.gh.page_size_cap)
    page = int(h.query.get("page", "1"))
    mine = sorted(
        (g for g in h.gh.gists.values() if g.owner == user and g.public),
        key=lambda g: -g.created,
    )
    last = max(1, -(-len(mine) // per_page))
    items = [h.gh.gist_json(g, content=False) for g in mine[(page - 1) * per_page :][:per_page]]
    raw = json.dumps(items).encode()
    etag = f'W/"{hashlib.sha256(raw).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=60, s-maxage=60"}
    links = []
    base = f"{h.gh.url}/users/{user}/gists?per_page={per_page}"
    if page < last:
        links.append(f'<{base}&page={page + 1}>; rel="next"')
        links.append(f'<{base}&page={last}>; rel="last"')
    if page > 1:
        links.append(f'<{base}&page=1>; rel="first"')
        links.append(f'<{base}&page={page - 1}>; rel="prev"')
    if links:
        headers["Link"] = ", ".join(links)
    if h.headers.get("If-None-Match") == etag:
        h.reply(304, None, headers)
    else:
        h.reply(200, items, headers)


_ROUTES: dict[tuple[str, str], Callable[[_Handler, str], None]] = {
    ("POST", "/login/device/code"): _device_code,
    ("POST", "/login/oauth/access_token"): _access_token,
    ("GET", "/user"): _user,
    ("POST", "/gists"): _create_gist,
    ("GET", "/gists/{id}"): _one_gist,
    ("PATCH", "/gists/{id}"): _one_gist,
    ("DELETE", "/gists/{id}"): _one_gist,
    ("GET", "/users/{user}/gists"): _user_gists,
}
