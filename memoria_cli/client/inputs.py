"""Files the client commands read, checked locally so bad input fails here with one clear line, not at the server.

Pure checks over bytes; the only I/O is reading the file. Images are opened with a pixel limit (no
decompression bombs), fully decoded (a truncated file fails here) and downscaled above a cap before sending.
"""

from __future__ import annotations

import base64
import functools
import io
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memoria_cli.core.errors import InputError

if TYPE_CHECKING:
    from PIL import Image

BOMB_PIXELS = 89_478_485  # Pillow's own default limit: refuse larger images outright
SEND_PIXELS = 4_194_304  # 2048 x 2048: larger images are downscaled before sending


MAX_INPUT_BYTES = 2 * 1024**3  # nothing a client command sends is larger; a bigger "file" is a mistake


def read_file(path: str | Path) -> bytes:
    """A regular file's bytes. FIFOs, sockets and devices are refused before opening (reading one can block
    forever or never end); so are files too large to hold in memory."""
    import stat

    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"file not found: {p}") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {p}: {getattr(exc, 'strerror', None) or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p} is a folder, not a file", "give the files inside it")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{p} is not a regular file (a pipe, socket or device)", "save it to a file first")
    if st.st_size > MAX_INPUT_BYTES:
        raise InputError(
            f"{p} is {st.st_size / 1024**3:.1f} GiB: larger than any input memoria sends", "split it first"
        )
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError(f"file not found: {p}") from None
    except IsADirectoryError:
        raise InputError(f"{p} is a folder, not a file", "give the files inside it") from None
    except PermissionError:
        raise InputError(f"cannot read {p}: permission denied") from None
    except OSError as exc:
        raise InputError(f"cannot read {p}: {exc.strerror or exc}") from None
    if not data:
        raise InputError(f"{p} is empty")
    return data


def new_output(path: Path) -> None:
    """An -o target: never an existing file (nothing the user has is overwritten), in a folder that exists."""
    if path.exists() or path.is_symlink():
        raise InputError(f"{path} exists", "choose another name or remove it first")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"cannot write {path}: the folder {parent} does not exist", "create it first")
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write {path}: the folder {parent} is not writable")


def text_lines(data: bytes, name: str) -> list[str]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{name} is not UTF-8 text (bad byte at offset {exc.start})",
            "convert it first, e.g. `iconv -f latin1 -t utf-8`",
        ) from None
    return text.splitlines()


def parse_pages(spec: str | None, count: int) -> list[int]:
    """'1-3,5' -> [0, 1, 2, 4] (zero-based), checked against the document's page count."""
    if not spec:
        return list(range(count))
    pages: list[int] = []
    try:
        for part in spec.split(","):
            a, _, b = part.strip().partition("-")
            lo, hi = int(a), int(b or a)
            if lo < 1 or hi < lo:
                raise ValueError
            if hi > count:  # checked before the range is built: `1-300000000` costs nothing
                raise InputError(f"page {max(lo, count + 1)} does not exist (the document has {count})")
            pages.extend(range(lo - 1, hi))
            if len(pages) > 10 * count:
                raise InputError(f"--pages {spec[:60]!r} repeats pages over and over")
    except ValueError:
        raise InputError(f"--pages {spec[:60]!r} is not a page list", "write it like 1-3,5") from None
    return pages


def load_image(data: bytes, name: str) -> Image.Image:
    """A fully decoded PIL image, or one clear error for a damaged, unknown or oversized file."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = BOMB_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # Pillow only warns below 2x its limit
            probe = Image.open(io.BytesIO(data))
        with probe:
            if probe.width * probe.height > BOMB_PIXELS:
                raise Image.DecompressionBombError("too many pixels")
            probe.verify()
        img = Image.open(io.BytesIO(data))
        img.load()
        return img
    except UnidentifiedImageError:
        raise InputError(f"{name} is not an image memoria can read", "use PNG, JPEG, GIF, WebP, BMP or PDF") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(
            f"{name} has too many pixels (over {BOMB_PIXELS:,}): refusing a possible decompression bomb",
            "downscale it first",
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name} is damaged ({exc})", "re-export or re-download it") from None


def image_data_url(img: Image.Image, max_pixels: int = SEND_PIXELS) -> tuple[str, bool]:
    """PNG data URL of the image, downscaled (keeping its aspect) above `max_pixels`; (url, was_downscaled)."""
    from PIL import Image

    small = False
    if img.width * img.height > max_pixels:
        scale = (max_pixels / (img.width * img.height)) ** 0.5
        img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))), Image.Resampling.LANCZOS)
        small = True
    if img.mode not in ("RGB", "L"):
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), small


PDF_LOCK = threading.Lock()  # pdfium is not thread-safe: one call into it at a time, whichever thread asks
PDF_SCALE = 2.0  # 144 dpi: small print stays legible for OCR


def _open_pdf(data: bytes, name: str) -> Any:
    import pypdfium2 as pdfium

    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise InputError(f"{name} is encrypted", "decrypt it first (e.g. `qpdf --decrypt`)") from None
        if _no_pages(data):  # pdfium refuses a page-less file outright
            raise InputError(f"{name} has no pages") from None
        raise InputError(f"{name} is not a readable PDF ({exc})") from None


def pdf_pages(
    data: bytes, name: str, pages: str | None, max_pixels: int = SEND_PIXELS
) -> list[tuple[int, Callable[[], Any]]]:
    """[(page number, render())] for the chosen pages, checked against the page count before anything is
    rendered. Each page is rendered only when its render() is called, so one page at a time is in memory."""
    with PDF_LOCK:
        doc = _open_pdf(data, name)
        try:
            count = len(doc)
        finally:
            doc.close()
    if count == 0:
        raise InputError(f"{name} has no pages")
    return [(i + 1, functools.partial(render_pdf_page, data, name, i, max_pixels)) for i in parse_pages(pages, count)]


def render_pdf_page(data: bytes, name: str, index: int, max_pixels: int = SEND_PIXELS) -> Any:
    """One page as a PIL image at 144 dpi, or smaller so that it has at most `max_pixels` (a 343-byte PDF can
    declare a 14,400-point page: 5.7 GB at 144 dpi). A page too elongated to fit is refused."""
    with PDF_LOCK:
        doc = _open_pdf(data, name)
        try:
            page = doc[index]
            w, h = page.get_size()
            if not (w > 0 and h > 0):
                raise InputError(f"{name} page {index + 1} has no area")
            scale = min(PDF_SCALE, (max_pixels / (w * h)) ** 0.5)
            if w * scale < 8 or h * scale < 8:
                raise InputError(
                    f"{name} page {index + 1} is {w:.0f} x {h:.0f} points: too elongated to render "
                    f"legibly within {max_pixels:,} pixels",
                    "crop the page first",
                )
            return page.render(scale=scale).to_pil()
        finally:
            doc.close()


def _no_pages(data: bytes) -> bool:
    """A /Type /Pages dictionary with /Count 0, whatever its key order."""
    return any(
        re.search(rb"/Type\s*/Pages\b", d) and re.search(rb"/Count\s*0\b", d)
        for d in re.findall(rb"<<([^<>]*)>>", data)
    )
