"""`memoria ocr`: text (or Markdown) out of images and PDF pages, with the vision model."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from memoria_cli.cli.client_options import API_KEY, BASE_URL, MODEL, TIMEOUT

Job = tuple[str, Path, int | None, Callable[[], Any]]  # (label, file, page, the image when called)

PLAIN = "Extract all text from this image."
MARKDOWN = "Convert this document to markdown format."


def register(app: typer.Typer) -> None:
    app.command(name="ocr")(ocr_cmd)


def pages_of(files: list[Path], pages: str | None, max_pixels: int = 4_194_304) -> list[Job]:
    """[(label, file, page or None, image())] for every image and chosen PDF page, checked locally before
    anything is sent. Images are decoded now (a damaged one fails here); PDF pages are rendered when sent."""
    from memoria_cli.client.inputs import load_image, pdf_pages, read_file

    jobs: list[Job] = []
    for f in files:
        data = read_file(f)
        if data[:5] == b"%PDF-":
            for n, render in pdf_pages(data, str(f), pages, max_pixels):
                jobs.append((f"{f} [page {n}]", f, n, render))
        else:
            jobs.append((str(f), f, None, functools.partial(_same, load_image(data, str(f)))))
    return jobs


def _same(img: Any) -> Any:
    return img


def output_names(items: list[tuple[Path, int | None]], ext: str) -> list[str]:
    """One file name per page, never two alike: `x.txt`, `x-p2.txt`; where inputs would share a name
    (a/x.png and b/x.png, x.pdf's page 1 and x-p1.png) each takes its suffix and as many of its folders as it
    takes to tell them apart (`a_x.png.txt`). The same page given twice is refused: its answer would be
    written twice."""
    from collections import Counter

    from memoria_cli.core.errors import InputError

    where = [(f.resolve(), n) for f, n in items]
    twice = [f for (f, n), c in Counter(where).items() if c > 1]
    if twice:
        raise InputError(f"{twice[0]} is given twice", "give each file once")

    def name(i: int, depth: int) -> str:
        f, n = where[i]
        page = f"-p{n}" if n else ""
        if depth < 0:
            return f"{f.stem}{page}{ext}"
        folders = [p for p in f.parent.parts if p != "/"][len(f.parent.parts) - 1 - depth :] if depth else []
        return f"{'_'.join([*folders, f.stem])}.{f.suffix.lstrip('.')}{page}{ext}"

    depth = [-1] * len(items)
    names = [name(i, -1) for i in range(len(items))]
    for _ in range(64):  # each round, names still shared take one folder more
        clash = {x for x, c in Counter(names).items() if c > 1}
        if not clash:
            return names
        for i, x in enumerate(names):
            if x in clash:
                depth[i] += 1
                names[i] = name(i, depth[i])
    return [f"{i + 1}-{x}" for i, x in enumerate(names)]  # paths this deep: number them


def ocr_cmd(
    files: list[Path] = typer.Argument(..., metavar="FILE", help="PNG, JPEG, GIF, WebP, BMP or PDF files."),
    model: str = MODEL,
    markdown: bool = typer.Option(False, "--markdown", help="Ask for Markdown (the API guide's prompt)."),
    prompt: str = typer.Option(None, "--prompt", help="Any other instruction."),
    pages: str = typer.Option(None, "--pages", help="PDF pages, e.g. 1-3,5 (default: all)."),
    out_dir: Path = typer.Option(None, "--output-dir", "-o", help="One file per page in this folder."),
    max_tokens: int = typer.Option(4096, "--max-tokens", help="Longest answer per page."),
    max_pixels: int = typer.Option(4_194_304, "--max-pixels", help="Downscale larger images before sending."),
    concurrency: int = typer.Option(2, "--concurrency", help="Pages in flight at once."),
    base_url: str = BASE_URL,
    api_key: str = API_KEY,
    timeout: float = TIMEOUT,
) -> None:
    """Extract the text of images and PDF pages; several pages are sent concurrently, printed in order.

    Example: `memoria ocr page.png`, `memoria ocr report.pdf --pages 1-3 --markdown -o out/`.
    """
    from memoria_cli.cli.client_options import connect
    from memoria_cli.cli.console import err, progress
    from memoria_cli.client.api import request_pool
    from memoria_cli.client.inputs import image_data_url
    from memoria_cli.core.errors import InputError
    from memoria_cli.run.files import write_atomic

    if markdown and prompt:
        raise InputError("give --markdown or --prompt, not both")
    instruction = prompt or (MARKDOWN if markdown else PLAIN)
    if not 1024 <= max_pixels <= 64 * 2**20:
        raise InputError(f"--max-pixels {max_pixels} is out of range", "give 1024 to 67108864")
    jobs = pages_of(files, pages, max_pixels)
    targets = []
    if out_dir is not None:
        targets = [
            out_dir / name for name in output_names([(f, n) for _, f, n, _ in jobs], ".md" if markdown else ".txt")
        ]
        taken = [str(t) for t in targets if t.exists()]
        if taken:
            raise InputError(f"{taken[0]} exists", "choose another --output-dir or remove it first")
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError(f"--output-dir {out_dir} is a file", "give a folder (it is made if missing)")
    api, model = connect("vision", model, base_url, api_key, timeout)

    def run(job: Job) -> str:
        label, _, _, image = job
        url, smaller = image_data_url(image(), max_pixels)
        if smaller:
            err().print(f"{label}: downscaled to at most {max_pixels:,} pixels", style="dim")
        data = api.post_json(
            "chat/completions",
            {
                "model": model,
                "max_tokens": max_tokens,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": instruction},
                            {"type": "image_url", "image_url": {"url": url}},
                        ],
                    }
                ],
            },
        )
        return ((data.get("choices") or [{}])[0].get("message") or {}).get("content") or ""

    texts: list[str] = []
    with request_pool(concurrency) as pool, progress("ocr", len(jobs), len(jobs) > 1) as advance:
        for t in pool.map(run, jobs):
            texts.append(t)
            advance()
    for i, ((label, *_), text) in enumerate(zip(jobs, texts, strict=True)):
        if targets:
            write_atomic(targets[i], text.rstrip() + "\n", private=False)
        elif len(jobs) > 1:
            sys.stdout.write(f"==> {label} <==\n{text.rstrip()}\n\n")
        else:
            sys.stdout.write(text.rstrip() + "\n")
    if targets:
        err().print(f"wrote {len(targets)} file(s) to {out_dir}")
