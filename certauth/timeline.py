"""The rotation timeline of one identity as a self-contained SVG: one bar per certificate over its validity,
a "today" line, each certificate's last use, and an arrow from each predecessor to its successor.

Pure (no Django): the admin (``certauth.admin.timeline``) turns registry entries into ``Bar`` values and
marks the result safe.  That is only sound because every text that reaches the SVG goes through ``text()``:
labels, subjects and thumbprints are chosen by whoever had the certificate issued, so they may hold markup,
control characters or bidirectional overrides.  The SVG needs no script and no external resource.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from .certificates import visible

WIDTH = 1000
LABEL_WIDTH = 230  # the names, left of the bars
NOTE_WIDTH = 220  # "last used …", right of the bars
ROW_HEIGHT = 34
TOP = 34  # room for the axis dates
BOTTOM = 22  # room for the "today" label
LABEL_CHARACTERS = 30  # longer names are shortened (the whole name is in the row's <title>)
#: Fill and outline per status: the legend is the text beside each bar; colour only reinforces it.
COLOURS = {
    "valid": ("#8fcb9f", "#17602d"),
    "expiring": ("#eab860", "#7a4a00"),
    "expired": ("#ee9e95", "#9c2317"),
    "not_yet_valid": ("#9dbbee", "#1a468f"),
    "revoked": ("#d0d0d0", "#3d3d3d"),
}


_EARLIEST = dt.datetime.min.replace(tzinfo=dt.UTC)
_LATEST = dt.datetime.max.replace(tzinfo=dt.UTC)


def text(value: object) -> str:
    """``value`` as XML character data or attribute value: markup escaped, quotes too, and every invisible
    or reordering character written as ``\\uXXXX`` so an operator sees it is there."""
    return escape(visible(str(value)), {'"': "&quot;", "'": "&#x27;"})


def shorten(value: str, limit: int = LABEL_CHARACTERS) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


@dataclass(frozen=True)
class Bar:
    """One certificate as the timeline draws it.  ``key`` identifies it (and its predecessor's ``replaces``);
    the texts are already worded by the caller (translated, "3 minutes ago")."""

    key: str
    name: str
    status: str  # a key of COLOURS
    status_text: str
    not_after: dt.datetime
    not_before: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    last_used_text: str = "never used"
    revoked_at: dt.datetime | None = None
    replaces: str | None = None  # the key of the predecessor
    replaces_name: str = ""
    href: str | None = None
    subject: str = ""  # the certificate's subject CN, when known


def _dates(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%d}"


def describe(bar: Bar) -> str:
    """One sentence per certificate: the timeline's meaning without the picture (the SVG's <desc>)."""
    start = _dates(bar.not_before) if bar.not_before else "an unknown date"
    named = f"{bar.name} (CN {bar.subject})" if bar.subject and bar.subject != bar.name else bar.name
    parts = [f"{named}: {bar.status_text}, valid from {start} to {_dates(bar.not_after)}", bar.last_used_text]
    if bar.revoked_at is not None:
        parts.append(f"revoked on {_dates(bar.revoked_at)}")
    if bar.replaces_name:
        parts.append(f"replaces {bar.replaces_name}")
    return ", ".join(parts) + "."


def render(bars: Sequence[Bar], *, now: dt.datetime, title: str, more: int = 0) -> str:
    """The SVG (as a string of markup) for ``bars`` in the order given, with the "today" line at ``now``.
    ``more`` is how many older certificates were left out; the description says so.  Empty when no bars."""
    if not bars:
        return ""
    moments = [now] + [moment for bar in bars for moment in (bar.not_before, bar.not_after) if moment is not None]
    first, last = min(moments), max(moments)
    margin = max((last - first) / 40, dt.timedelta(days=1))
    # Never past the calendar's ends: RFC 5280's "no expiration" notAfter is 9999-12-31 (an OverflowError, a 500).
    first = first - min(margin, first - _EARLIEST)
    last = last + min(margin, _LATEST - last)
    left, right = LABEL_WIDTH, WIDTH - NOTE_WIDTH
    span = (last - first).total_seconds()

    def x(moment: dt.datetime) -> float:
        return round(left + (moment - first).total_seconds() / span * (right - left), 1)

    height = TOP + ROW_HEIGHT * len(bars) + BOTTOM
    rows = {bar.key: index for index, bar in enumerate(bars)}
    summary = " ".join(describe(bar) for bar in bars)
    if more:
        summary += f" {more} older certificate{'s' if more != 1 else ''} not shown."
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="certauth-timeline" role="img" '
        f'aria-labelledby="certauth-timeline-title certauth-timeline-desc" viewBox="0 0 {WIDTH} {height}" '
        f'width="100%" font-family="sans-serif" font-size="12">',
        f'<title id="certauth-timeline-title">{text(title)}</title>',
        f'<desc id="certauth-timeline-desc">{text(summary)}</desc>',
        '<defs><marker id="certauth-timeline-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>',
    ]
    # The axis: five dates across the top, with faint guide lines.
    for step in range(5):
        moment = first + (last - first) * (step + 0.5) / 5
        at = x(moment)
        out.append(
            f'<line class="certauth-timeline-grid" x1="{at}" y1="{TOP - 10}" x2="{at}" y2="{height - BOTTOM}" '
            'stroke="#e3e3e3"/>'
            f'<text class="certauth-timeline-axis" x="{at}" y="{TOP - 16}" text-anchor="middle" fill="#666">'
            f"{_dates(moment)}</text>"
        )
    for index, bar in enumerate(bars):
        out.append(_row(bar, index, x, left))
    # Successor links: from the predecessor's row down (or up) to where its successor starts.
    for index, bar in enumerate(bars):
        if bar.replaces is None or bar.replaces not in rows:
            continue
        at = x(bar.not_before) if bar.not_before is not None else left + 4
        y_from, y_to = _middle(rows[bar.replaces]), _middle(index)
        direction = 1 if y_to > y_from else -1  # a predecessor registered after its successor points up
        y_from, y_to = y_from + 9 * direction, y_to - 9 * direction
        out.append(
            f'<path class="certauth-timeline-successor" data-from="{text(bar.replaces)}" data-to="{text(bar.key)}" '
            f'd="M{at},{y_from} L{at},{y_to}" stroke="#555" stroke-width="1.5" fill="none" '
            'marker-end="url(#certauth-timeline-arrow)"><title>'
            f"{text(bar.name)} replaces {text(bar.replaces_name)}</title></path>"
        )
    today = x(now)
    out.append(
        f'<g class="certauth-timeline-today"><line x1="{today}" y1="{TOP - 6}" x2="{today}" y2="{height - BOTTOM + 4}" '
        'stroke="#ba2121" stroke-width="2" stroke-dasharray="5 3"/>'
        f'<text x="{today}" y="{height - 6}" text-anchor="middle" fill="#ba2121" font-weight="bold">'
        f"today {_dates(now)}</text></g>"
    )
    out.append("</svg>")
    return "".join(out)


def _middle(index: int) -> float:
    return TOP + ROW_HEIGHT * index + ROW_HEIGHT / 2


def _row(bar: Bar, index: int, x: Callable[[dt.datetime], float], left: int) -> str:
    top = TOP + ROW_HEIGHT * index
    middle = _middle(index)
    fill, stroke = COLOURS.get(bar.status, COLOURS["revoked"])
    start = x(bar.not_before) if bar.not_before is not None else left
    end = x(bar.not_after)
    parts = [
        f'<g class="certauth-timeline-entry certauth-timeline-entry--{text(bar.status)}" data-entry="{text(bar.key)}">',
        f"<title>{text(describe(bar))}</title>",
    ]
    name = (
        f'<text class="certauth-timeline-name" x="8" y="{middle - 3}" font-weight="bold" fill="#222">'
        f"{text(shorten(bar.name))}</text>"
    )
    if bar.href:
        name = f'<a href="{text(bar.href)}">{name}</a>'
    parts.append(name)
    second = bar.status_text + (f" · replaces {shorten(bar.replaces_name, 18)}" if bar.replaces_name else "")
    parts.append(
        f'<text class="certauth-timeline-detail" x="8" y="{middle + 12}" fill="#555" font-size="11">'
        f"{text(second)}</text>"
    )
    dashed = ' stroke-dasharray="4 3"' if bar.not_before is None or bar.revoked_at is not None else ""
    parts.append(
        f'<rect class="certauth-timeline-bar" x="{start}" y="{top + 8}" width="{max(end - start, 2)}" '
        f'height="{ROW_HEIGHT - 16}" rx="4" fill="{fill}" stroke="{stroke}"{dashed}/>'
    )
    if bar.revoked_at is not None:
        at = x(bar.revoked_at)
        parts.append(
            f'<text class="certauth-timeline-revoked" x="{at}" y="{middle + 4}" text-anchor="middle" '
            f'fill="{stroke}" font-weight="bold">✕</text>'
        )
    if bar.last_used_at is not None:
        at = x(bar.last_used_at)
        parts.append(
            f'<circle class="certauth-timeline-used" cx="{at}" cy="{middle}" r="5" fill="#fff" stroke="#222" '
            'stroke-width="2"/>'
        )
    parts.append(
        f'<text class="certauth-timeline-note" x="{WIDTH - NOTE_WIDTH + 10}" y="{middle + 4}" fill="#333">'
        f"{text(bar.last_used_text)}</text>"
    )
    parts.append("</g>")
    return "".join(parts)
