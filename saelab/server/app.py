"""The viewer's HTTP server: assets, read-only run directories, and a small JSON API.

Routes: `/` and `/<asset>` (the viewer), `GET /api/runs`, `GET /api/compare?a=<n>/<run>&b=...`
(the paired differences of two dashboard rows), `GET /api/matches?export=<n>&latent=<id>` (a
latent's matches in the other served exports), `GET /data/<n>/<file>` (the n-th
served directory; `x.json` is answered from `x.json.gz` with `Content-Encoding: gzip`),
`GET /remote/openai/<path>` (OpenAI's public viewer files, cached), `POST /api/prompt`.

Safety: every file path is percent-decoded once and checked by `files.inside` (resolved,
symlinks followed, inside its root), and the file served is the one checked, the `.gz` of the
gzip fallback included, so `..`, encoded `..` and symlinks out of a directory are refused.
Served directories give only the types the viewer reads (JSON, CSV, PNG), sandboxed, so a
document inside an export cannot run in the viewer's origin. Only the Host names of the bound
address (with `--host 0.0.0.0`: the machine's names and `--allow-host`) are answered (DNS
rebinding); the prompt takes only `application/json` (a cross-site form cannot send it
without a preflight) and runs one request at a time on its one model. Every response, the
standard library's own errors included, carries a Content-Security-Policy that allows no
inline script and nothing from other origins. Malformed requests are answered 400, and a
connection that stalls is dropped after `Handler.timeout` seconds.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import mimetypes
import socket
import threading
from collections.abc import Callable, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from saelab.errors import UserError
from saelab.server import remote
from saelab.server.files import MAX_PART, inside
from saelab.server.matches import Link, latent_links
from saelab.server.runs import Run, paired_differences

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'none'"
)
TYPES = {".js": "text/javascript", ".json": "application/json", ".css": "text/css"}
# What the viewer and dashboard read from served directories; anything else (an .html or .svg
# that would run as a document in the viewer's origin) is refused.
DATA_TYPES = {".json": "application/json", ".csv": "text/csv; charset=utf-8", ".png": "image/png"}
MAX_PROMPT_BYTES = 64 * 1024
LOOPBACK = ("127.0.0.1", "localhost", "::1")
EVERY_INTERFACE = ("", "0.0.0.0", "::")


def viewer_dir() -> Path:
    """Assets ship inside the wheel as saelab/viewer; a source checkout keeps them in viewer/."""
    packaged = Path(__file__).parent.parent / "viewer"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent.parent / "viewer"


def exposed(host: str) -> bool:
    """Whether binding `host` serves beyond this machine (the viewer has no authentication)."""
    return host not in LOOPBACK and not host.startswith("127.")


def machine_names() -> set[str]:
    """This machine's host name, fully qualified name and the addresses they resolve to."""
    name = socket.gethostname()
    names = {name, socket.getfqdn()}
    with contextlib.suppress(OSError):  # a name that does not resolve: the names alone
        names |= {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    return names


def host_names(host: str, allow: Sequence[str] = ()) -> set[str]:
    """The names a browser may send as Host: loopback's, the bound address, `--allow-host`
    names and, bound beyond loopback, the machine's own. Never every name: without the check a
    page on another site reaches the server through DNS rebinding."""
    names = {*LOOPBACK, *(name.lower() for name in allow)}
    if host not in EVERY_INTERFACE:
        names.add(host.lower())
    if exposed(host):
        names |= {name.lower() for name in machine_names()}
    return names


def bracketed(name: str) -> str:
    """An IPv6 address as URLs and Host headers write it."""
    return f"[{name}]" if ":" in name else name


class ViewerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        runs: list[Run],
        cache_dir: Path,
        prompt: Callable[[str], dict[str, Any]] | None = None,
        prompt_info: dict[str, Any] | None = None,
        allow_hosts: Sequence[str] = (),
        links: Sequence[Link] = (),
    ) -> None:
        host = address[0]
        if ":" in host:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.runs, self.cache_dir, self.assets = runs, cache_dir, viewer_dir()
        self.prompt, self.prompt_info = prompt, prompt_info
        self.links = list(links)
        self.prompt_lock = threading.Lock()  # one model, its hooks added per call: one at a time
        port = self.server_address[1]
        self.host_names = host_names(host, allow_hosts)
        self.allowed_hosts = {f"{bracketed(name)}:{port}" for name in self.host_names}
        if port == 80:  # browsers leave the default port out
            self.allowed_hosts |= {bracketed(name) for name in self.host_names}
        shown = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        self.url = f"http://{bracketed(shown)}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    server_version = "saelab-view"
    sys_version = ""
    timeout = 10  # seconds a connection may stall (a body that never comes holds a thread)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the URL is all users need
        pass

    # -- responses ------------------------------------------------------------------------
    def send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        gzipped: bool = False,
        sandbox: bool = False,
    ) -> None:
        """Every response goes through here. `sandbox`: a served directory's file, which a
        browser opened as a document must not run in the viewer's origin."""
        if gzipped and "gzip" not in self.headers.get("Accept-Encoding", ""):
            try:
                body, gzipped = gzip.decompress(body), False
            except (OSError, EOFError):  # not gzip after all: say so rather than drop the line
                return self.error(HTTPStatus.UNPROCESSABLE_ENTITY, "a stored .gz is not gzip")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Security-Policy", f"{CSP}; sandbox" if sandbox else CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, data: Any, status: int = 200) -> None:
        self.send(status, json.dumps(data).encode(), "application/json")

    def error(self, status: HTTPStatus, message: str) -> None:
        self.send_json({"error": message}, status)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own errors (a bad request line, 414, 431, 501) answer as ours
        do: JSON, with the security headers."""
        self.close_connection = True
        self.error(HTTPStatus(code), message or HTTPStatus(code).phrase)

    def send_file(self, root: Path, relative: str, data: bool = False) -> None:
        """`root/relative`, checked by `inside`; the file read is the path it returned.
        `data`: a served directory, which gives only DATA_TYPES, sandboxed."""
        relative = relative.lstrip("/")
        if any(len(part) > MAX_PART for part in relative.split("/")):
            return self.error(HTTPStatus.BAD_REQUEST, f"a path part is over {MAX_PART} characters")
        if not data and (not relative or relative.endswith("/")):
            relative += "index.html"
        suffix = PurePosixPath(relative).suffix
        if data and suffix not in DATA_TYPES:
            kinds = ", ".join(DATA_TYPES)
            return self.error(HTTPStatus.FORBIDDEN, f"served directories give only {kinds} files")
        try:
            path = inside(root, relative)
            gzipped = path is not None and suffix == ".json" and not path.is_file()
            if gzipped:  # the fallback checks the .gz it opens, not the name asked for
                path = inside(root, f"{relative}.gz")
            if path is None:
                return self.error(HTTPStatus.FORBIDDEN, "outside the served directory")
            if not path.is_file():
                return self.error(HTTPStatus.NOT_FOUND, f"no such file: {relative}")
            body = path.read_bytes()
        except OSError:
            return self.error(HTTPStatus.NOT_FOUND, f"cannot read {relative}")
        kind = (DATA_TYPES if data else TYPES).get(suffix) or mimetypes.guess_type(path.name)[0]
        self.send(200, body, kind or "application/octet-stream", gzipped=gzipped, sandbox=data)

    # -- routing --------------------------------------------------------------------------
    def host_ok(self) -> bool:
        if self.headers.get("Host", "").lower() not in self.server.allowed_hosts:
            self.error(HTTPStatus.FORBIDDEN, "unexpected Host header")
            return False
        return True

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self.host_ok():
            return
        path = unquote(urlsplit(self.path).path)
        if path == "/api/runs":
            return self.send_json(
                {
                    "runs": [run.describe() for run in self.server.runs],
                    "prompt": self.server.prompt_info if self.server.prompt else None,
                }
            )
        if path == "/api/compare":
            query = parse_qs(urlsplit(self.path).query)
            try:
                a, b = query["a"][0], query["b"][0]
                return self.send_json(paired_differences(self.server.runs, a, b))
            except KeyError:
                return self.error(HTTPStatus.BAD_REQUEST, "give two rows: ?a=<n>/<run>&b=<n>/<run>")
            except UserError as error:
                return self.error(HTTPStatus.BAD_REQUEST, str(error))
        if path == "/api/matches":
            query = parse_qs(urlsplit(self.path).query)
            export, latent = query.get("export", [""])[0], query.get("latent", [""])[0]
            if not all(v.isascii() and v.isdigit() for v in (export, latent)):
                return self.error(HTTPStatus.BAD_REQUEST, "give ?export=<n>&latent=<id>")
            found = latent_links(self.server.links, int(export), int(latent))
            return self.send_json({"matches": found})
        if path.startswith("/data/"):
            index, _, relative = path.removeprefix("/data/").partition("/")
            if not index.isdigit() or int(index) >= len(self.server.runs):
                return self.error(HTTPStatus.NOT_FOUND, f"no served directory {index}")
            return self.send_file(self.server.runs[int(index)].path, relative, data=True)
        if path.startswith("/remote/openai/"):
            return self.send_remote(path.removeprefix("/remote/openai/"))
        if path.startswith("/api/"):
            return self.error(HTTPStatus.NOT_FOUND, f"no such endpoint: {path}")
        self.send_file(self.server.assets, path)

    def send_remote(self, relative: str) -> None:
        try:
            body = remote.cached_viewer_file(relative, self.server.cache_dir)
        except ValueError as error:
            return self.error(HTTPStatus.FORBIDDEN, str(error))
        except remote.RemoteError as error:
            return self.error(HTTPStatus.BAD_GATEWAY, str(error))
        self.send(200, body, "application/json")

    def do_POST(self) -> None:
        if not self.host_ok():
            return
        if urlsplit(self.path).path != "/api/prompt":
            return self.error(HTTPStatus.NOT_FOUND, "POST only to /api/prompt")
        if self.server.prompt is None:
            return self.error(
                HTTPStatus.NOT_FOUND,
                "no model loaded: start saelab view with a model and SAE, e.g. experiment=tiny",
            )
        if self.headers.get_content_type() != "application/json":
            return self.error(  # a form or text/plain POST from another site: no model run
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the prompt as application/json"
            )
        length = self.headers.get("Content-Length", "")
        if not (length.isascii() and length.isdigit()):
            return self.error(HTTPStatus.BAD_REQUEST, "Content-Length must be a number of bytes")
        if int(length) > MAX_PROMPT_BYTES:
            return self.error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "prompt too long")
        try:
            text = json.loads(self.rfile.read(int(length)))["text"]
            if not isinstance(text, str) or not text:
                raise ValueError
            text.encode()  # a lone surrogate is not text: UnicodeEncodeError, a ValueError
        except (ValueError, KeyError, TypeError, RecursionError):
            return self.error(HTTPStatus.BAD_REQUEST, 'send {"text": "<non-empty string>"}')
        with self.server.prompt_lock:
            answer = self.server.prompt(text)
        self.send_json(answer)
