"""`memoria ocr`: text (or Markdown) out of images and PDF pages, with the vision model."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import typer

from memoria_cli.commands.client_options import API_KEY, BASE_URL, MODEL, TIMEOUT

PLAIN = "Extract all text from this image."
MARKDOWN = "Convert this document to markdown format."


def register(app: typer.Typer) -> None:
    app.command(name="ocr")(ocr_cmd)


def pages_of(files: list[Path], pages: str | None) -> list[tuple[str, Path, int | None, object]]:
    """[(label, file, page or None, PIL image)] for every image and chosen PDF page, checked locally."""
    from memoria_cli.inputs import load_image, pdf_pages, read_file

    jobs = []
    for f in files:
        data = read_file(f)
        if data[:5] == b"%PDF-":
            for n, img in pdf_pages(data, str(f), pages):
                jobs.append((f"{f} [page {n}]", f, n, img))
        else:
            jobs.append((str(f), f, None, load_image(data, str(f))))
    return jobs


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
    base_url: str = BASE_URL, api_key: str = API_KEY, timeout: float = TIMEOUT,
) -> None:
    """Extract the text of images and PDF pages; several pages are sent concurrently, printed in order.

    Example: `memoria ocr page.png`, `memoria ocr report.pdf --pages 1-3 --markdown -o out/`.
    """
    from memoria_cli.commands.client_options import connect
    from memoria_cli.console import err, progress
    from memoria_cli.errors import InputError
    from memoria_cli.inputs import image_data_url

    if markdown and prompt:
        raise InputError("give --markdown or --prompt, not both")
    instruction = prompt or (MARKDOWN if markdown else PLAIN)
    jobs = pages_of(files, pages)
    targets = []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        ext = ".md" if markdown else ".txt"
        targets = [out_dir / f"{f.stem}{f'-p{n}' if n else ''}{ext}" for _, f, n, _ in jobs]
        taken = [str(t) for t in targets if t.exists()]
        if taken:
            raise InputError(f"{taken[0]} exists", "choose another --output-dir or remove it first")
    api, model = connect("vision", model, base_url, api_key, timeout)

    def run(job) -> str:
        label, _, _, img = job
        url, smaller = image_data_url(img, max_pixels)
        if smaller:
            err().print(f"{label}: downscaled to at most {max_pixels:,} pixels", style="dim")
        data = api.post_json("chat/completions", {"model": model, "max_tokens": max_tokens, "messages": [
            {"role": "user", "content": [{"type": "text", "text": instruction},
                                         {"type": "image_url", "image_url": {"url": url}}]}]})
        return ((data.get("choices") or [{}])[0].get("message") or {}).get("content") or ""

    texts = []
    with ThreadPoolExecutor(max(1, concurrency)) as pool, progress("ocr", len(jobs), len(jobs) > 1) as advance:
        for t in pool.map(run, jobs):
            texts.append(t)
            advance()
    for i, ((label, *_), text) in enumerate(zip(jobs, texts, strict=True)):
        if targets:
            targets[i].write_text(text.rstrip() + "\n", encoding="utf-8")
        elif len(jobs) > 1:
            sys.stdout.write(f"==> {label} <==\n{text.rstrip()}\n\n")
        else:
            sys.stdout.write(text.rstrip() + "\n")
    if targets:
        err().print(f"wrote {len(targets)} file(s) to {out_dir}")
