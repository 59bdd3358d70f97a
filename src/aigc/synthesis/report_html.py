"""One self-contained HTML page for a synthesis report.

``render(report, real, synth, meta_or_types, title) -> str`` writes the headline figures
(fidelity, utility, privacy next to its real-holdout reference), per-column distributions real
vs synthetic (overlaid histograms for numerical columns, side-by-side bars of the top categories
for categorical ones), the column-pair association heat maps real | synthetic, the DCR histogram
and generic sections, so text and image reports can reuse the page.

The page has no external assets and no JavaScript: every plot is inline SVG written here. Every
value that comes from the data or the caller (column names, categories, captions, titles, table
cells) is HTML-escaped, so data is never read as markup; an image must be a base64 data URI of a
raster format (PNG, JPEG, GIF, WebP), anything else is left out with a note.

The report dict may hold, all optional (the shapes of ``aigc.metrics.table``'s results):

- ``"quality"``: ``quality(...)``; ``"diagnostic"``: ``diagnostic(...)``; ``"detection"``: float;
- ``"tstr"``: ``tstr(...)``; ``"privacy"``: ``privacy(...)`` (its ``"dcr_histogram"`` is drawn);
- ``"dcr"``: raw distances ``{series name: [float, ...]}`` drawn as one histogram;
- ``"sections"``: ``[{"title", "text", "table": [[header, ...], [cell, ...], ...], "images":
  [{"src": data URI, "caption"} or a data URI], "histograms": [{"title", "bins": edges,
  "series": {name: counts}}]}]``;
- any other key: a table of its scalar values, by key path.

Knows nothing of runs, workspaces or files: the caller writes the string where it wants.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

import numpy as np
import pandas as pd

from aigc.metrics import table as metrics

_COLORS = ("#1f6fb4", "#f07f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
_W, _H = 360, 200  # one plot
_TOP_CATEGORIES = 10
_MAX_HEATMAP_COLUMNS = 40
_KNOWN = ("quality", "diagnostic", "detection", "tstr", "privacy", "dcr", "sections")
_IMAGE_URI = re.compile(r"data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/=\s]+")

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI","PingFang SC","Microsoft YaHei",
"Noto Sans CJK SC",sans-serif;margin:24px auto;max-width:1200px;padding:0 16px;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}
h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
h3{font-size:1em;margin:.8em 0 .3em}
table{border-collapse:collapse;margin:.4em 0 1em}td,th{border:1px solid #ddd;padding:3px 9px;text-align:left}
th{background:#f4f6f8}td.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:14px}
.card{border:1px solid #e3e3e3;border-radius:6px;padding:8px;background:#fff}
.card .cap{font-size:.85em;color:#555;max-width:360px;overflow-wrap:anywhere}
.legend span{display:inline-block;margin-right:14px;font-size:.85em}
.legend span.sw{width:11px;height:11px;margin-right:4px;vertical-align:-1px}
.note{color:#666;font-size:.9em}figure{margin:0}img{max-width:360px;image-rendering:pixelated}
svg text{font-size:10px;fill:#444}
"""


def esc(value: Any) -> str:
    """Text safe inside HTML and SVG, element content and attribute values alike."""
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "n/a"
        if v != 0 and abs(v) < 1e-3 or abs(v) >= 1e6:
            return f"{v:.3g}"
        return f"{v:.3f}"
    return str(value)


def _tick(value: float) -> str:
    """An axis label: 17, 53.5, 0.174, 1.46e+06."""
    v = float(value)
    if abs(v) >= 1e5:
        return f"{v:.3g}"
    return str(int(v)) if v.is_integer() else f"{v:.4g}"


def _share(v: float) -> str:
    return "<1%" if 0 < v < 0.005 else f"{v:.0%}"


def _short(text: str, limit: int = 18) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _rows(header: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            numeric = isinstance(cell, (int, float, np.integer, np.floating)) and not isinstance(cell, bool)
            cls = ' class="n"' if numeric or cell is None else ""
            cells.append(f"<td{cls}>{esc(_fmt(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _legend(names: list[str]) -> str:
    items = "".join(f'<span><span class="sw" style="background:{_COLORS[i % len(_COLORS)]}"></span>'
                    f'{esc(n)}</span>' for i, n in enumerate(names))
    return f'<div class="legend">{items}</div>'


def _card(svg: str, title: str, caption: str = "") -> str:
    cap = f'<div class="cap">{esc(caption)}</div>' if caption else ""
    return f'<figure class="card"><h3>{esc(title)}</h3>{svg}{cap}</figure>'


# ----------------------------------------------------------------------------- plots


def _svg(body: str, width: int = _W, height: int = _H, label: str = "") -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}">{body}</svg>')


def _histogram_svg(edges: list[float], series: dict[str, list[float]], label: str,
                   tick=None) -> str:
    """Overlaid step histograms, each series as shares of its own total."""
    left, right, top, bottom = 40, 10, 8, 24
    pw, ph = _W - left - right, _H - top - bottom
    shares = {}
    for name, counts in series.items():
        c = np.asarray(counts, dtype=np.float64)
        shares[name] = c / c.sum() if c.sum() > 0 else c
    peak = max((float(s.max()) for s in shares.values() if len(s)), default=0.0) or 1.0
    n = len(edges) - 1
    parts = [f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#999"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#999"/>',
             f'<text x="{left - 4}" y="{top + 8}" text-anchor="end">{esc(_share(peak))}</text>',
             f'<text x="{left - 4}" y="{top + ph}" text-anchor="end">0</text>']
    for i, (name, s) in enumerate(shares.items()):
        color = _COLORS[i % len(_COLORS)]
        points = [f"{left},{top + ph}"]
        for j in range(n):
            y = top + ph - (s[j] / peak) * ph if j < len(s) else top + ph
            x0, x1 = left + pw * j / n, left + pw * (j + 1) / n
            points += [f"{x0:.1f},{y:.1f}", f"{x1:.1f},{y:.1f}"]
        points.append(f"{left + pw},{top + ph}")
        parts.append(f'<polygon points="{" ".join(points)}" fill="{color}" fill-opacity="0.28" '
                     f'stroke="{color}" stroke-width="1.4"><title>{esc(name)}</title></polygon>')
    tick = tick or _tick
    for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        value = edges[0] + frac * (edges[-1] - edges[0])
        parts.append(f'<text x="{left + pw * frac:.1f}" y="{_H - 8}" text-anchor="{anchor}">'
                     f'{esc(tick(value))}</text>')
    return _svg("".join(parts), label=label)


def _bars_svg(categories: list[str], series: dict[str, list[float]], label: str) -> str:
    """Horizontal side-by-side bars: one group per category, one bar per series (shares)."""
    left, right, top = 110, 34, 6
    k = len(series)
    row = max(8, min(18, (_H - top - 6) // max(len(categories), 1)))
    height = max(_H, top + row * len(categories) + 6)
    pw = _W - left - right
    peak = max((max(v) for v in series.values() if len(v)), default=0.0) or 1.0
    parts = [f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + row * len(categories)}" stroke="#999"/>']
    bar = (row - 3) / k
    for ci, cat in enumerate(categories):
        y0 = top + ci * row
        parts.append(f'<text x="{left - 4}" y="{y0 + row / 2 + 3:.1f}" text-anchor="end">'
                     f'<title>{esc(cat)}</title>{esc(_short(cat))}</text>')
        for si, (name, values) in enumerate(series.items()):
            v = values[ci]
            w = pw * v / peak
            y = y0 + 1 + si * bar
            parts.append(f'<rect x="{left}" y="{y:.1f}" width="{w:.1f}" height="{max(bar - 0.5, 1):.1f}" '
                         f'fill="{_COLORS[si % len(_COLORS)]}"><title>{esc(name)}: {esc(cat)} '
                         f'{esc(f"{v:.1%}")}</title></rect>')
            if si == k - 1 or k == 1:
                top_v = max(vals[ci] for vals in series.values())
                parts.append(f'<text x="{left + pw * top_v / peak + 3:.1f}" y="{y0 + row / 2 + 3:.1f}">'
                             f'{esc(_share(top_v))}</text>')
    return _svg("".join(parts), _W, height, label=label)


def _color(v: float) -> str:
    if v is None or not np.isfinite(v):
        return "#d9d9d9"
    v = max(-1.0, min(1.0, float(v)))
    if v >= 0:  # white -> blue
        r, g, b = (int(255 - (255 - c) * v) for c in (31, 111, 180))
    else:  # white -> red
        r, g, b = (int(255 - (255 - c) * -v) for c in (214, 39, 40))
    return f"#{r:02x}{g:02x}{b:02x}"


def _heatmap_svg(names: list[str], matrix: np.ndarray, label: str) -> str:
    n = len(names)
    cell = max(8, min(22, 300 // max(n, 1)))
    left, top = 112, 20
    width, height = left + cell * n + 6, top + cell * n + 6
    parts = []
    for j in range(n):
        parts.append(f'<text x="{left + j * cell + cell / 2:.1f}" y="{top - 6}" text-anchor="middle">'
                     f'<title>{esc(names[j])}</title>{j + 1}</text>')
    for i in range(n):
        parts.append(f'<text x="{left - 4}" y="{top + i * cell + cell / 2 + 3:.1f}" text-anchor="end">'
                     f'<title>{esc(names[i])}</title>{i + 1}. {esc(_short(names[i], 14))}</text>')
        for j in range(n):
            v = matrix[i, j]
            parts.append(f'<rect x="{left + j * cell}" y="{top + i * cell}" width="{cell}" height="{cell}" '
                         f'fill="{_color(v)}" stroke="#fff" stroke-width="0.5"><title>{esc(names[i])} × '
                         f'{esc(names[j])}: {esc(_fmt(v))}</title></rect>')
    return _svg("".join(parts), width, height, label=label)


# ----------------------------------------------------------------------------- sections


def _headline(report: dict) -> str:
    out = []
    quality, diag = report.get("quality"), report.get("diagnostic")
    rows = []
    if isinstance(quality, dict):
        rows.append(["quality score (SDMetrics)", quality.get("score")])
        rows.append(["column shapes", quality.get("shapes")])
        rows.append(["column pair trends", quality.get("trends")])
    if report.get("detection") is not None:
        rows.append(["detection (1 = indistinguishable)", report.get("detection")])
    if isinstance(diag, dict):
        rows.append(["validity (share of valid rows)", diag.get("validity")])
        if diag.get("constraint_validity") is not None:
            rows.append(["constraints held", diag.get("constraint_validity")])
    if rows:
        out.append("<h2>Fidelity</h2>" + _rows(["figure", "value"], rows))
    tstr = report.get("tstr")
    if isinstance(tstr, dict) and isinstance(tstr.get("trtr"), dict):
        keys = list(tstr["trtr"])
        body = [[k, tstr["trtr"].get(k), (tstr.get("tstr") or {}).get(k)] for k in keys]
        note = f"target {tstr.get('target')}"
        if tstr.get("positive") is not None:
            note += f", positive class {tstr.get('positive')}"
        out.append(f"<h2>Utility</h2><p class=\"note\">{esc(note)}; trained on real (TRTR) or "
                   "synthetic (TSTR) rows, tested on the real holdout</p>"
                   + _rows(["metric", "TRTR (real)", "TSTR (synthetic)"], body))
    priv = report.get("privacy")
    if isinstance(priv, dict):
        body = [[k, v.get("value"), v.get("reference")] for k, v in priv.items()
                if isinstance(v, dict) and "value" in v]
        if body:
            out.append("<h2>Privacy</h2><p class=\"note\">each figure next to what a real holdout "
                       "set scores in place of the synthetic one</p>"
                       + _rows(["figure", "synthetic", "real holdout (reference)"], body))
    return "".join(out)


def _datetime_columns(meta: Any) -> set[str]:
    if isinstance(meta, dict):
        return {k for k, v in meta.items() if str(v).lower() == "datetime"}
    if callable(getattr(meta, "modelled", None)):
        return {c.name for c in meta.modelled() if c.kind == "datetime"}
    return set()


def _date_tick(seconds: float) -> str:
    try:
        return pd.Timestamp(seconds, unit="s").strftime("%Y-%m-%d")
    except (ValueError, OverflowError):
        return _fmt(seconds)


def _distributions(real: pd.DataFrame, synth: pd.DataFrame, meta: Any, quality: dict | None) -> str:
    r, s = metrics.column_values(real, meta), metrics.column_values(synth, meta)
    types = metrics.column_types(meta)
    dates = _datetime_columns(meta)
    scores = (quality or {}).get("per_column") or {}
    cards = []
    for name, typ in types.items():
        x, y = r[name], s[name]
        if typ == metrics.NUMERICAL:
            both = np.concatenate([x[~np.isnan(x)], y[~np.isnan(y)]])
            if len(both) == 0:
                continue
            lo, hi = float(both.min()), float(both.max())
            edges = np.linspace(lo, hi if hi > lo else lo + 1.0, 21)
            series = {"real": np.histogram(x[~np.isnan(x)], edges)[0],
                      "synthetic": np.histogram(y[~np.isnan(y)], edges)[0]}
            svg = _histogram_svg(edges.tolist(), series, f"distribution of {name}",
                                 tick=_date_tick if name in dates else None)
            missing = (float(np.isnan(x).mean()), float(np.isnan(y).mean()))
        else:
            real_counts = pd.Series(x[pd.notna(x)]).value_counts()
            synth_counts = pd.Series(y[pd.notna(y)]).value_counts()
            top = list(real_counts.index[:_TOP_CATEGORIES])
            cats = [str(c) for c in top]
            rs = [real_counts.get(c, 0) / len(x) for c in top]
            ss = [synth_counts.get(c, 0) / len(y) for c in top]
            other_r = 1 - sum(rs) - pd.isna(x).mean()
            other_s = 1 - sum(ss) - pd.isna(y).mean()
            if other_r > 1e-9 or other_s > 1e-9:
                cats.append("(other)")
                rs.append(max(other_r, 0.0))
                ss.append(max(other_s, 0.0))
            if pd.isna(x).any() or pd.isna(y).any():
                cats.append("(missing)")
                rs.append(float(pd.isna(x).mean()))
                ss.append(float(pd.isna(y).mean()))
            svg = _bars_svg(cats, {"real": rs, "synthetic": ss}, f"categories of {name}")
            missing = (float(pd.isna(x).mean()), float(pd.isna(y).mean()))
        caption = f"missing: real {missing[0]:.1%}, synthetic {missing[1]:.1%}"
        if name in scores:
            caption = f"shape score {_fmt(scores[name])}; " + caption
        cards.append(_card(svg, name, caption))
    if not cards:
        return ""
    return ("<h2>Column distributions</h2>" + _legend(["real", "synthetic"])
            + f'<div class="grid">{"".join(cards)}</div>')


def _heatmaps(real: pd.DataFrame, synth: pd.DataFrame, meta: Any) -> str:
    names, real_m = metrics.association_matrix(real, meta)
    if len(names) < 2:
        return ""
    _, synth_m = metrics.association_matrix(synth, meta)
    note = ""
    if len(names) > _MAX_HEATMAP_COLUMNS:
        note = f" (the first {_MAX_HEATMAP_COLUMNS} of {len(names)} columns)"
        k = _MAX_HEATMAP_COLUMNS
        names, real_m, synth_m = names[:k], real_m[:k, :k], synth_m[:k, :k]
    cards = [_card(_heatmap_svg(names, real_m, "associations, real"), "real"),
             _card(_heatmap_svg(names, synth_m, "associations, synthetic"), "synthetic")]
    return ("<h2>Column-pair associations</h2><p class=\"note\">Pearson r between numerical "
            "columns (red negative, blue positive), Cramér's V otherwise; grey: undefined"
            f"{esc(note)}</p>" + f'<div class="grid">{"".join(cards)}</div>')


def _histogram_card(spec: dict) -> str:
    series = {str(k): list(v) for k, v in (spec.get("series") or {}).items()}
    bins = list(spec.get("bins") or [])
    title = str(spec.get("title") or "histogram")
    if not bins or not series:
        return _card("", title, "no data")
    try:
        edges = [float(e) for e in bins]
    except (TypeError, ValueError):  # labelled bins (categories, top n-grams): bars of shares
        shares = {k: [c / (sum(v) or 1) for c in v] for k, v in series.items()}
        return _card(_legend(list(shares)) + _bars_svg([str(b) for b in bins], shares, title), title,
                     "shares of each series per value")
    if len(edges) < 2:
        return _card("", title, "no data")
    return _card(_legend(list(series)) + _histogram_svg(edges, series, title), title,
                 "shares of each series per bin")


def _dcr(report: dict) -> str:
    privacy = report.get("privacy")
    spec = privacy.get("dcr_histogram") if isinstance(privacy, dict) else None
    raw = report.get("dcr")
    if spec is None and isinstance(raw, dict) and raw:
        arrays = {str(k): np.asarray(v, dtype=np.float64) for k, v in raw.items()}
        top = max((float(a.max()) for a in arrays.values() if len(a)), default=1.0) or 1.0
        edges = np.linspace(0.0, top, 21)
        spec = {"title": "Distance to the closest record (DCR)", "bins": edges.tolist(),
                "series": {k: np.histogram(a, edges)[0].tolist() for k, a in arrays.items()}}
    if not spec:
        return ""
    return f'<h2>Distance to closest record</h2><div class="grid">{_histogram_card(spec)}</div>'


def _image(item: Any) -> str:
    src, caption = item, ""
    if isinstance(item, dict):
        src, caption = item.get("src") or item.get("data"), item.get("caption", "")
    if not isinstance(src, str) or not _IMAGE_URI.fullmatch(src.strip()):
        return _card("", str(caption or "image"), "image left out: not a PNG, JPEG, GIF or WebP data URI")
    return (f'<figure class="card"><img src="{esc(src.strip())}" alt="{esc(caption)}">'
            f'<div class="cap">{esc(caption)}</div></figure>')


def _section(sec: dict) -> str:
    parts = [f"<h2>{esc(sec.get('title') or 'Section')}</h2>"]
    if sec.get("text"):
        parts.append(f"<p>{esc(sec['text'])}</p>")
    table = sec.get("table")
    if table:
        parts.append(_rows([str(h) for h in table[0]], [list(r) for r in table[1:]]))
    cards = [_image(i) for i in sec.get("images") or []]
    cards += [_histogram_card(h) for h in sec.get("histograms") or []]
    if cards:
        parts.append(f'<div class="grid">{"".join(cards)}</div>')
    return "".join(parts)


def _flatten(value: Any, path: str, out: list[list[Any]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, (list, tuple)):
        if len(value) <= 8 and all(not isinstance(v, (dict, list, tuple)) for v in value):
            out.append([path, ", ".join(_fmt(v) for v in value)])
        else:
            out.append([path, f"[{len(value)} values]"])
    else:
        out.append([path, value])


def _others(report: dict) -> str:
    rows: list[list[Any]] = []
    for key, value in report.items():
        if key not in _KNOWN:
            _flatten(value, str(key), rows)
    return ("<h2>Other figures</h2>" + _rows(["figure", "value"], rows)) if rows else ""


def render(report: dict, real: pd.DataFrame | None, synth: pd.DataFrame | None, meta_or_types: Any,
           title: str) -> str:
    """The report as one HTML page (a UTF-8 string). ``real`` and ``synth`` (with their
    ``meta_or_types``, a TableMetadata or ``{column: "numerical" | "categorical"}``; None infers
    numerical for numeric dtypes) give the distribution plots and heat maps; without them the page
    holds the report's figures and sections only."""
    if not isinstance(report, dict):
        raise TypeError(f"report must be a dict, not {type(report).__name__}")
    body = [f"<h1>{esc(title)}</h1>"]
    if isinstance(report.get("privacy"), dict) and isinstance(report["privacy"].get("rows"), dict):
        rows = report["privacy"]["rows"]
        body.append(f'<p class="note">{esc(", ".join(f"{k}: {v}" for k, v in rows.items()))} rows</p>')
    body.append(_headline(report))
    if real is not None and synth is not None:
        if meta_or_types is None:
            meta_or_types = {c: ("numerical" if pd.api.types.is_numeric_dtype(real[c]) else "categorical")
                             for c in real.columns if c in synth.columns}
        body.append(_distributions(real, synth, meta_or_types, report.get("quality")))
        body.append(_heatmaps(real, synth, meta_or_types))
    body.append(_dcr(report))
    for sec in report.get("sections") or []:
        if isinstance(sec, dict):
            body.append(_section(sec))
    body.append(_others(report))
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")
