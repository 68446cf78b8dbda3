"""Small HTML pieces of the self-contained report: escaped text, notes, embedded pictures.

Shared by :mod:`.report`, :mod:`.report_metrics` and :mod:`.analysis_report` so that every
section escapes and embeds the same way (``data:`` URIs only: the report opens without a network).
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

__all__ = ["data_uri", "embedded_file", "img", "note", "value_text"]


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def img(data: bytes, mime: str, alt: str) -> str:
    """An ``<img>`` with ``data`` embedded."""
    return f'<img src="{data_uri(data, mime)}" alt="{html.escape(alt)}">'


def embedded_file(path: Path, mime: str, alt: str) -> str:
    """An ``<img>`` with the file at ``path`` embedded."""
    return img(Path(path).read_bytes(), mime, alt)


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def value_text(value) -> str:
    """A metric or fact for a table cell: floats with 2 decimals, COCO's NaN/None as n/a."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"  # COCO's NaN (no object of that size), null in final_metrics.json
    if isinstance(value, float):
        return f"{value:.2f}"
    return html.escape(str(value))
