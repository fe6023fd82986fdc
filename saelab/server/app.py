"""The viewer's HTTP server: assets, read-only run directories, and a small JSON API.

Routes: `/` and `/<asset>` (the viewer), `GET /api/runs`, `GET /data/<n>/<file>` (the n-th
served directory; `x.json` is answered from `x.json.gz` with `Content-Encoding: gzip`),
`GET /remote/openai/<path>` (OpenAI's public viewer files, cached), `POST /api/prompt`.

Safety: every file path is percent-decoded once, resolved (following symlinks) and must stay
inside its root, so `..`, encoded `..` and symlinks out of a directory are refused. Only the
Host names of the bound address are answered (DNS rebinding), and every response carries a
Content-Security-Policy that allows no inline script and nothing from other origins.
"""

from __future__ import annotations

import gzip
import json
import mimetypes
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from saelab.server import remote
from saelab.server.runs import Run

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'none'"
)
TYPES = {".js": "text/javascript", ".json": "application/json", ".css": "text/css"}
MAX_PROMPT_BYTES = 64 * 1024


def viewer_dir() -> Path:
    """Assets ship inside the wheel as saelab/viewer; a source checkout keeps them in viewer/."""
    packaged = Path(__file__).parent.parent / "viewer"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent.parent / "viewer"


def contained(root: Path, relative: str) -> Path | None:
    """`root/relative` if it resolves inside `root` (symlinks followed), else None."""
    if "\x00" in relative or "\\" in relative:
        return None
    root = root.resolve()
    target = (root / relative.lstrip("/")).resolve()
    return target if target.is_relative_to(root) else None


class ViewerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        runs: list[Run],
        cache_dir: Path,
        prompt: Callable[[str], dict[str, Any]] | None = None,
        prompt_info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(address, Handler)
        self.runs, self.cache_dir, self.assets = runs, cache_dir, viewer_dir()
        self.prompt, self.prompt_info = prompt, prompt_info
        host, port = self.server_address[:2]
        self.url = f"http://{host}:{port}/"
        loopback = host in ("127.0.0.1", "::1", "localhost")
        names = ("127.0.0.1", "localhost", "[::1]") if loopback else ()
        self.allowed_hosts = {f"{name}:{port}" for name in names}  # empty: any host allowed


class Handler(BaseHTTPRequestHandler):
    server: ViewerServer
    server_version = "saelab-view"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the URL is all users need
        pass

    # -- responses ------------------------------------------------------------------------
    def send(self, status: int, body: bytes, content_type: str, gzipped: bool = False) -> None:
        if gzipped and "gzip" not in self.headers.get("Accept-Encoding", ""):
            body, gzipped = gzip.decompress(body), False
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Security-Policy", CSP)
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

    def send_file(self, root: Path, relative: str) -> None:
        path = contained(root, relative)
        if path is None:
            return self.error(HTTPStatus.FORBIDDEN, "outside the served directory")
        if path.is_dir():
            path = path / "index.html"
        gz = path.with_name(path.name + ".gz")
        if not path.is_file() and path.suffix == ".json" and gz.is_file():
            return self.send(200, gz.read_bytes(), TYPES[".json"], gzipped=True)
        if not path.is_file():
            return self.error(HTTPStatus.NOT_FOUND, f"no such file: {relative}")
        kind = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0]
        self.send(200, path.read_bytes(), kind or "application/octet-stream")

    # -- routing --------------------------------------------------------------------------
    def host_ok(self) -> bool:
        allowed = self.server.allowed_hosts
        if allowed and self.headers.get("Host", "") not in allowed:
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
        if path.startswith("/data/"):
            index, _, relative = path.removeprefix("/data/").partition("/")
            if not index.isdigit() or int(index) >= len(self.server.runs):
                return self.error(HTTPStatus.NOT_FOUND, f"no served directory {index}")
            return self.send_file(self.server.runs[int(index)].path, relative)
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
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_PROMPT_BYTES:
            return self.error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "prompt too long")
        try:
            text = json.loads(self.rfile.read(length))["text"]
            if not isinstance(text, str) or not text:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return self.error(HTTPStatus.BAD_REQUEST, 'send {"text": "<non-empty string>"}')
        self.send_json(self.server.prompt(text))
