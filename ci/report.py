"""Validation report: a dependency-free PNG writer and the self-contained ``report.html``.

Standard library only: the validation worker imports this file inside the venv under test (for the PNG
writer), and ``ci validate`` uses it to turn ``validation.json`` into HTML. Pictures are embedded as data
URIs, so ``report.html`` is one file that can be carried off a GPU machine and opened anywhere.
"""

from __future__ import annotations

import base64
import html
import json
import os
import struct
import zlib
from pathlib import Path
from typing import Any


def png_bytes(width: int, height: int, rgb: bytes) -> bytes:
    """Encode 8-bit RGB pixels (rows top to bottom, ``3·width`` bytes each) as a PNG file."""
    if width <= 0 or height <= 0:
        raise ValueError(f"png_bytes: width and height must be positive, got {width}×{height}")
    stride = 3 * width
    if len(rgb) != stride * height:
        raise ValueError(f"png_bytes: expected {stride * height} bytes for {width}×{height} RGB, got {len(rgb)}")
    raw = b"".join(b"\x00" + rgb[y * stride:(y + 1) * stride] for y in range(height))  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def read_png_rgb(data: bytes) -> tuple[int, int, bytes]:
    """Decode an 8-bit RGB or RGBA non-interlaced PNG (any row filter) → (width, height, RGB bytes)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, width = 8, b"", 0
    height = color = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or color not in (2, 6) or interlace:
                raise ValueError("only 8-bit non-interlaced RGB/RGBA PNGs are supported")
        elif kind == b"IDAT":
            idat += body
    bpp = 3 if color == 2 else 4
    stride = bpp * width
    raw = zlib.decompress(idat)
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 255
            elif ftype == 2:
                line[i] = (line[i] + b) & 255
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 255
        prev = line
        if bpp == 3:
            out += line
        else:
            out += b"".join(bytes(line[i:i + 3]) for i in range(0, stride, 4))
    return width, height, bytes(out)


def data_uri(path: str | os.PathLike[str]) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


_STATUS_COLOR = {"passed": "#1a7f37", "failed": "#cf222e", "pending": "#9a6700", "skipped": "#6e7781",
                 "passed-gpu-pending": "#9a6700", "unavailable": "#6e7781", "available": "#1a7f37"}


def _badge(status: str | None) -> str:
    s = status or "?"
    return f'<span class="b" style="background:{_STATUS_COLOR.get(s, "#6e7781")}">{html.escape(s)}</span>'


def _fmt_metrics(m: dict[str, Any] | None) -> str:
    if not m:
        return ""
    parts = []
    for k, v in m.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        parts.append(f"{html.escape(str(k))}={html.escape(str(v))}")
    return ", ".join(parts)


def render_html(report: dict[str, Any], base_dir: str | os.PathLike[str]) -> str:
    """``report.html`` for a validation report; image paths in it are relative to ``base_dir``."""
    base = Path(base_dir)
    w = report.get("wheel", {})
    env = report.get("environment", {})
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>nvdiffrast validation: "
        f"{html.escape(w.get('filename', '?'))}</title><style>"
        "body{font-family:sans-serif;margin:1.5em;max-width:1400px}td,th{border:1px solid #ccc;padding:3px 6px;"
        "vertical-align:top;font-size:13px}table{border-collapse:collapse;margin-bottom:1.5em}"
        ".b{color:#fff;border-radius:4px;padding:1px 6px;font-size:12px}img{image-rendering:pixelated;"
        "height:192px;max-width:600px;border:1px solid #999}code{font-size:12px}</style></head><body>",
        f"<h1>Validation of {html.escape(w.get('filename', '?'))}</h1>",
        f"<p>Overall {_badge(report.get('status'))} &nbsp; GPU validation {_badge(report.get('gpu_validation'))}"
        " &nbsp; checks: " + ", ".join(
            f"{sum(1 for c in report.get('checks', []) if c.get('status') == s)} {s}"
            for s in ("passed", "failed", "pending", "skipped")) + "</p>",
        "<table>",
    ]
    rows = [
        ("sha256", w.get("sha256")), ("size", w.get("size")), ("variant", w.get("variant")),
        ("version", w.get("version")), ("GPU", env.get("gpu") or "none"), ("driver", env.get("driver")),
        ("torch", env.get("torch")), ("torch CUDA", env.get("torch_cuda")), ("python", env.get("python")),
        ("platform", env.get("platform")), ("started", report.get("started")),
        ("duration", f"{report.get('duration_s', 0):.1f} s"),
        ("built against", json.dumps({k: w.get("build_info", {}).get(k) for k in
                                      ("torch_version", "cuda_version", "arch_list", "git_commit", "build_time")})),
    ]
    out += [f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(str(v))}</code></td></tr>" for k, v in rows]
    out.append("</table><h2>Backends</h2><table><tr><th>backend</th><th>status</th><th>note</th></tr>")
    for name, b in report.get("backends", {}).items():
        out.append(f"<tr><td>{html.escape(name)}</td><td>{_badge(b.get('status'))}</td>"
                   f"<td>{html.escape(b.get('reason', '') or '')}</td></tr>")
    out.append("</table><h2>Checks</h2><table><tr><th>check</th><th>backend</th><th>status</th><th>detail</th>"
               "<th>metrics</th><th>s</th></tr>")
    for c in report.get("checks", []):
        dur = c.get("duration_s")
        out.append(
            f"<tr><td>{html.escape(c.get('name', ''))}</td><td>{html.escape(c.get('backend') or '')}</td>"
            f"<td>{_badge(c.get('status'))}</td><td>{html.escape(c.get('detail', '') or '')}</td>"
            f"<td><code>{_fmt_metrics(c.get('metrics'))}</code></td>"
            f"<td>{'' if dur is None else f'{dur:.2f}'}</td></tr>"
        )
    out.append("</table>")
    images = report.get("images", [])
    if images:
        out.append("<h2>Pictures</h2><p>Per scene and backend: the reference (golden), this artifact's render, and "
                   "the absolute difference as a heat map (black = equal; scale in the caption). Row 0 of the "
                   "API is the bottom row; pictures are shown top-down.</p><table>"
                   "<tr><th>scene / backend</th><th>reference</th><th>artifact</th><th>difference</th></tr>")
        for im in images:
            cells = []
            for key in ("reference", "artifact", "diff"):
                p = im.get(key)
                if p and (base / p).is_file():
                    cells.append(f"<td><img src='{data_uri(base / p)}' alt='{html.escape(key)}'></td>")
                else:
                    cells.append("<td>—</td>")
            caption = f"{html.escape(im.get('scene', ''))}<br>{html.escape(im.get('backend', ''))}"
            if im.get("reference_backend"):
                caption += f"<br><small>vs {html.escape(im['reference_backend'])}</small>"
            if im.get("diff_scale") is not None:
                caption += f"<br><small>heat max = {im['diff_scale']:.3g}</small>"
            out.append(f"<tr><td>{caption}</td>{''.join(cells)}</tr>")
        out.append("</table>")
    timings = report.get("timings", [])
    if timings:
        out.append("<h2>Per-op timings</h2><table><tr><th>backend</th><th>op</th><th>workload</th>"
                   "<th>forward ms</th><th>backward ms</th></tr>")
        for t in timings:
            def ms(v: Any) -> str:
                return "" if v is None else f"{v:.3f}"

            out.append(f"<tr><td>{html.escape(t.get('backend', ''))}</td><td>{html.escape(t.get('op', ''))}</td>"
                       f"<td>{html.escape(t.get('workload', ''))}</td><td>{ms(t.get('fwd_ms'))}</td>"
                       f"<td>{ms(t.get('bwd_ms'))}</td></tr>")
        out.append("</table>")
    out.append("</body></html>\n")
    return "".join(out)


def write_report(report: dict[str, Any], out_dir: str | os.PathLike[str]) -> Path:
    """Write ``validation.json`` and ``report.html`` into ``out_dir``; return the HTML path."""
    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / "validation.json").write_text(json.dumps(report, indent=1, sort_keys=False) + "\n")
    page = d / "report.html"
    page.write_text(render_html(report, d))
    return page
