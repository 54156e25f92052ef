"""Bad or hostile input to the client commands, and interrupted runs: no hang, no half-written or overwritten
output, one clear line and the documented exit code. Against a small in-test server, not the real stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from memoria_cli.client.inputs import read_file
from memoria_cli.commands.ocr import output_names
from memoria_cli.core.errors import InputError
from tests.helpers import run_memoria

pytestmark = pytest.mark.medium  # starts processes: a runtime's python, the CLI, a build


class Hanging(BaseHTTPRequestHandler):
    """Lists one model of each kind, then never answers a POST (a request that takes the whole timeout)."""

    posts = 0

    def do_GET(self):
        body = json.dumps({"data": [{"id": m} for m in ("e", "c", "v", "t")]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        type(self).posts += 1
        time.sleep(30)

    def log_message(self, *a):
        pass


@pytest.fixture
def hanging():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Hanging)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Hanging.posts = 0
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_embed_leaves_nothing_and_does_not_wait_for_its_requests(tmp_path, hanging, sig, code):
    (tmp_path / "in.txt").write_text("".join(f"line {i}\n" for i in range(600)))
    out = tmp_path / "out.jsonl"
    p = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "memoria_cli",
            "embed",
            "-i",
            str(tmp_path / "in.txt"),
            "-o",
            str(out),
            "-m",
            "e",
            "--base-url",
            hanging,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MEMORIA_HOME": str(tmp_path / "home")},
        # a shell's background job inherits SIGINT ignored; a terminal's Ctrl-C is not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 20
    while Hanging.posts == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert Hanging.posts > 0, "the embed never sent a request"
    t0 = time.monotonic()
    p.send_signal(sig)
    _, err = p.communicate(timeout=15)
    assert p.returncode == code, err
    assert time.monotonic() - t0 < 5  # not the 600 s --timeout of the requests in flight
    assert sorted(f.name for f in tmp_path.iterdir()) == ["in.txt"]  # no out.jsonl, no .part


def test_fifos_and_devices_are_refused_not_read(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_file(fifo)  # would block forever on open
    with pytest.raises(InputError, match="not a regular file"):
        read_file("/dev/zero")  # would never end
    r = run_memoria("ocr", str(fifo), timeout=20)
    assert r.returncode == 3 and "not a regular file" in r.stderr


@pytest.mark.parametrize("value", ["0", "0.001", "nan", "-1", "inf", "1e9"])
def test_upload_limit_must_be_a_sane_size(tmp_path, value):
    (tmp_path / "a.wav").write_bytes(b"RIFF0000WAVE")
    r = run_memoria("transcribe", str(tmp_path / "a.wav"), "--max-upload-mb", value, timeout=20)
    assert r.returncode == 3, r.stderr
    assert "--max-upload-mb" in r.stderr and "Traceback" not in r.stderr


def test_ocr_output_names_never_collide():
    items = [
        (Path("a/x.png"), None),
        (Path("b/x.png"), None),
        (Path("x.pdf"), 1),
        (Path("x-p1.png"), None),
        (Path("y.png"), None),
        (Path("x.pdf"), 2),
    ]
    names = output_names(items, ".txt")
    assert names == ["a_x.png.txt", "b_x.png.txt", "x.pdf-p1.txt", "x-p1.png.txt", "y.txt", "x-p2.txt"]
    deep = output_names([(Path("p/a/x.png"), None), (Path("q/a/x.png"), None)], ".md")
    assert deep == ["p_a_x.png.md", "q_a_x.png.md"]
    assert len(set(names)) == len(names)
    with pytest.raises(InputError, match="given twice"):
        output_names([(Path("y.png"), None), (Path("./y.png"), None)], ".txt")


def test_ocr_refuses_before_any_request_when_an_output_exists(tmp_path, hanging):
    from PIL import Image

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / d / "x.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "b_x.png.txt").write_text("mine")
    r = run_memoria(
        "ocr",
        str(tmp_path / "a" / "x.png"),
        str(tmp_path / "b" / "x.png"),
        "-o",
        str(tmp_path / "out"),
        "-m",
        "v",
        "--base-url",
        hanging,
        timeout=30,
    )
    assert r.returncode == 3 and "exists" in r.stderr
    assert (tmp_path / "out" / "b_x.png.txt").read_text() == "mine" and Hanging.posts == 0


def pdf_with_pages(*sizes: tuple[float, float]) -> bytes:
    import io

    import pypdfium2 as pdfium

    doc = pdfium.PdfDocument.new()
    for w, h in sizes:
        doc.new_page(w, h)
    buf = io.BytesIO()
    doc.save(buf)
    doc.close()
    return buf.getvalue()


def test_huge_pdf_pages_are_rendered_within_the_pixel_cap_one_at_a_time():
    """Three 14,400-point pages declared in a few hundred bytes: 5.7 GB each at 144 dpi, uncapped."""
    import resource

    from memoria_cli.client.inputs import SEND_PIXELS, pdf_pages

    data = pdf_with_pages(*[(14400, 14400)] * 3)
    assert len(data) < 2000
    jobs = pdf_pages(data, "bomb.pdf", None)
    assert [n for n, _ in jobs] == [1, 2, 3]  # nothing rendered yet
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _, render in jobs:
        img = render()
        assert img.width * img.height <= SEND_PIXELS and img.width == img.height
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200, grown_mib  # one capped page at a time, not 17 GB


def test_a_page_list_is_checked_against_the_page_count_before_it_is_built():
    from memoria_cli.client.inputs import parse_pages, pdf_pages

    t0 = time.monotonic()
    with pytest.raises(InputError, match=r"page 4 does not exist \(the document has 3\)"):
        parse_pages("1-300000000", 3)
    with pytest.raises(InputError, match="repeats pages"):
        parse_pages(",".join(["1-3"] * 100), 3)
    assert time.monotonic() - t0 < 0.5
    with pytest.raises(InputError, match="too elongated"):
        [render() for _, render in pdf_pages(pdf_with_pages((14400, 1)), "strip.pdf", None)]
