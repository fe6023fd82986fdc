"""`saelab view` as an attacker would use it, over raw HTTP on loopback: symlinks through the
gzip fallback, documents inside served folders, Host names when bound to every interface,
malformed requests, stalled bodies, cross-site posts, and concurrent prompts on one model."""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import threading
import time
from pathlib import Path

import pytest

from saelab.server.app import Handler, ViewerServer
from tests.conftest import serving
from tests.viewer_data import write_export

SECRET = b"s3cr3t-outside-the-served-root"


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A valid export plus what an attacker could ship inside one."""
    root = tmp_path_factory.mktemp("security")
    (root / "secret.txt").write_bytes(SECRET)
    (root / "secret.json.gz").write_bytes(gzip.compress(b'{"s": "' + SECRET + b'"}'))
    served = write_export(root / "export")
    latents = served / "latents"
    (latents / "evil.json.gz").symlink_to(root / "secret.txt")  # raw bytes, "gzip" on the wire
    (latents / "evil2.json.gz").symlink_to(root / "secret.json.gz")  # real gzip: decompressed
    (latents / "alias.json.gz").symlink_to(latents / "0.json.gz")  # a symlink that stays inside
    script = b"<script>fetch('/api/runs').then(r => r.text()).then(alert)</script>"
    (served / "page.html").write_bytes(script)
    svg = b'<svg xmlns="http://www.w3.org/2000/svg">' + script + b"</svg>"
    (served / "image.svg").write_bytes(svg)
    (served / "notes.txt").write_text("plain text")
    (served / "weights.npy").write_bytes(b"\x93NUMPY")
    (served / "sub").mkdir()
    (served / "sub" / "index.html").write_bytes(script)
    (served / "sweep.csv").write_text("run,nmse\na,0.1\n")
    return served


@pytest.fixture(scope="module")
def server(export):
    with serving([str(export), "--no-browser"]) as srv:
        yield srv


@pytest.fixture(scope="module")
def prompt_server(export):
    with serving([str(export), "experiment=tiny", "--no-browser"]) as srv:
        yield srv


def request(server, method: str, path: str, body: bytes | None = None, headers=None, host=None):
    address, port = server.server_address[:2]
    conn = http.client.HTTPConnection(address, port, timeout=30)
    default_host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    conn.request(method, path, body, headers={"Host": host or default_host, **(headers or {})})
    response = conn.getresponse()
    response.body = response.read()
    conn.close()
    return response


def raw(server, data: bytes, timeout: float = 10) -> bytes:
    """Send `data` as is and read the whole answer (the server closes the connection)."""
    with socket.create_connection(server.server_address[:2], timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def headers_of(answer: bytes) -> dict[str, str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}


def is_json_error(answer: bytes) -> bool:
    return "error" in json.loads(answer.split(b"\r\n\r\n", 1)[1])


# -- 1. symlinks through the gzip fallback -----------------------------------------------------
@pytest.mark.parametrize("name", ["evil", "evil2"])
@pytest.mark.parametrize("encoding", ["gzip", None])
def test_gzip_fallback_refuses_symlinks_out_of_the_root(server, name, encoding):
    headers = {"Accept-Encoding": encoding} if encoding else {}
    response = request(server, "GET", f"/data/0/latents/{name}.json", headers=headers)
    assert response.status in (403, 404), response.status
    body = response.body
    if response.getheader("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
    assert SECRET not in body and "error" in json.loads(body)


def test_gzip_fallback_follows_symlinks_that_stay_inside(server, export):
    response = request(server, "GET", "/data/0/latents/alias.json")
    expected = json.loads(gzip.decompress((export / "latents" / "0.json.gz").read_bytes()))
    assert response.status == 200 and json.loads(response.body) == expected


# -- 3. only the data types the viewer reads, sandboxed ---------------------------------------
@pytest.mark.parametrize(
    "path", ["page.html", "image.svg", "notes.txt", "weights.npy", "sub/", "sub/index.html"]
)
def test_documents_in_served_folders_are_refused(server, path):
    response = request(server, "GET", f"/data/0/{path}")
    assert response.status in (403, 404), (path, response.status)
    assert response.getheader("Content-Type") == "application/json"
    assert b"<script>" not in response.body and "error" in json.loads(response.body)


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("manifest.json", "application/json"),
        ("latents/0.json", "application/json"),
        ("sweep.csv", "text/csv"),
    ],
)
def test_data_files_are_sandboxed_and_not_sniffed(server, path, content_type):
    response = request(server, "GET", f"/data/0/{path}", headers={"Accept-Encoding": "gzip"})
    assert response.status == 200
    assert response.getheader("Content-Type").split(";")[0] == content_type
    assert "sandbox" in response.getheader("Content-Security-Policy").split(";")[-1]
    assert response.getheader("X-Content-Type-Options") == "nosniff"


def test_viewer_assets_are_not_sandboxed(server):
    response = request(server, "GET", "/")
    assert response.status == 200 and b"<html" in response.body.lower()
    assert "sandbox" not in response.getheader("Content-Security-Policy")


# -- 4. binding beyond loopback: a warning, and the Host check stays ---------------------------
def test_every_interface_warns_and_keeps_the_host_check(export, monkeypatch, capsys):
    """Told 0.0.0.0, the server is bound to loopback here (tests listen on loopback only)."""
    bind = ViewerServer.server_bind

    def bind_loopback(self):
        self.server_address = ("127.0.0.1", 0)
        bind(self)

    monkeypatch.setattr(ViewerServer, "server_bind", bind_loopback)
    argv = [str(export), "--host", "0.0.0.0", "--allow-host", "box.example", "--no-browser"]
    with serving(argv) as srv:
        warning = capsys.readouterr().err
        assert "no authentication" in warning and "0.0.0.0" in warning
        port = srv.server_address[1]
        for name in ("evil.example", "0.0.0.1", "box.example.evil"):
            refused = request(srv, "GET", "/data/0/manifest.json", host=f"{name}:{port}")
            assert refused.status == 403, name
        for name in ("box.example", "localhost", "127.0.0.1", socket.gethostname()):
            answered = request(srv, "GET", "/data/0/manifest.json", host=f"{name}:{port}")
            assert answered.status == 200, name


def test_loopback_does_not_warn(export, capsys):
    with serving([str(export), "--no-browser"]):
        assert "no authentication" not in capsys.readouterr().err


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_loopback_serves(export):
    with serving([str(export), "--host", "::1", "--no-browser"]) as srv:
        assert srv.url.startswith("http://[::1]:")
        assert request(srv, "GET", "/data/0/manifest.json").status == 200
        port = srv.server_address[1]
        assert request(srv, "GET", "/", host=f"evil.example:{port}").status == 403


# -- 5. malformed requests: 400, never a dropped connection ------------------------------------
def post(server, body: bytes, content_type: str | None = "application/json", length=None):
    host, port = server.server_address[:2]
    head = ["POST /api/prompt HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    if content_type:
        head.append(f"Content-Type: {content_type}")
    head.append(f"Content-Length: {len(body) if length is None else length}")
    return raw(server, ("\r\n".join(head) + "\r\n\r\n").encode() + body)


def test_a_path_part_over_255_characters_is_400(server):
    host, port = server.server_address[:2]
    for path in (f"/data/0/{'a' * 300}.json", f"/{'b' * 300}", f"/data/0/latents/{'c' * 260}"):
        answer = raw(server, f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        assert status_of(answer) == 400 and is_json_error(answer), path
    deep = "/data/0/" + "/".join(["d" * 200] * 30) + ".json"  # past PATH_MAX: not found
    answer = raw(server, f"GET {deep} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    assert status_of(answer) in (400, 404) and is_json_error(answer)


@pytest.mark.parametrize(
    ("body", "length"),
    [
        (b'{"text": "hi"}', "abc"),  # a non-numeric Content-Length
        (b'{"text": "hi"}', "-1"),  # negative: would read until the client closes
        (b"[" * 60_000, None),  # nested deeper than the recursion limit
        (b'{"text": "\\ud800 lone"}', None),  # a lone surrogate: not text a tokenizer takes
        (b'{"text": "\xff\xfe"}', None),  # not UTF-8
    ],
)
def test_malformed_prompts_are_400(prompt_server, body, length):
    answer = post(prompt_server, body, length=length)
    assert status_of(answer) == 400 and is_json_error(answer)
    assert request(prompt_server, "GET", "/api/runs").status == 200  # still serving


@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded"])
def test_a_cross_site_simple_post_does_not_run_the_model(prompt_server, monkeypatch, content_type):
    """A page elsewhere can POST text/plain without a preflight; only JSON runs the model."""
    calls = []
    monkeypatch.setattr(prompt_server, "prompt", lambda text: calls.append(text) or {})
    answer = post(prompt_server, b'{"text": "hello"}', content_type)
    assert status_of(answer) == 415 and is_json_error(answer) and not calls


def test_standard_library_errors_carry_the_security_headers(server):
    host, port = server.server_address[:2]
    too_long = raw(server, f"GET /{'x' * 70_000} HTTP/1.1\r\n\r\n".encode())
    unsupported = raw(server, f"PUT / HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
    long_header = raw(server, f"GET / HTTP/1.1\r\nX: {'y' * 70_000}\r\n\r\n".encode())
    for answer, status in ((too_long, 414), (unsupported, 501), (long_header, 431)):
        headers = headers_of(answer)
        assert status_of(answer) == status
        assert "default-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-type"] == "application/json" and is_json_error(answer)


def test_a_stalled_body_is_dropped_after_the_connection_timeout(server, monkeypatch):
    assert Handler.timeout is not None and 0 < Handler.timeout <= 30
    monkeypatch.setattr(Handler, "timeout", 0.5)  # the same path, without waiting 10 s
    host, port = server.server_address[:2]
    start = time.monotonic()
    head = f"POST /api/prompt HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 100\r\n"
    raw(server, (head + "Content-Type: application/json\r\n\r\n{").encode(), timeout=5)
    assert time.monotonic() - start < 4


# -- 2. concurrent prompts on one model --------------------------------------------------------
def test_concurrent_prompts_answer_as_sequential_ones(prompt_server):
    texts = [f"{'To be, or not to be, ' * (i + 1)}that is question {i}." for i in range(8)]
    texts += ["a", "Whether 'tis nobler in the mind to suffer the slings and arrows"]
    texts += [f"The {word} sat on the mat." for word in ("cat", "dog", "man", "hat")]  # one length

    def ask(text: str) -> tuple[int, dict]:
        body = json.dumps({"text": text}).encode()
        response = request(
            prompt_server, "POST", "/api/prompt", body, {"Content-Type": "application/json"}
        )
        return response.status, json.loads(response.body)

    expected = {text: ask(text) for text in texts}
    assert all(status == 200 for status, _ in expected.values())
    answers: list[tuple[str, int, dict]] = []
    failures: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(3):
                text = texts[(offset + 3 * i) % len(texts)]
                answers.append((text, *ask(text)))
        except BaseException as error:  # a dropped connection fails the test below
            failures.append(error)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures and len(answers) == 24
    wrong = [text for text, status, answer in answers if (status, answer) != expected[text]]
    assert not wrong, f"{len(wrong)} of 24 concurrent answers differ from the sequential ones"
