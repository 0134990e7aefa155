"""The Stats page's charts as inline SVG: time to removal by provider, share removed by country.

Pure functions from the figures (:func:`broker.takedown.figures.summarise`) to
markup; every text is escaped, colours are presentation attributes (no inline
style under the CSP), and only provider ids, country codes and numbers are drawn.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup, escape

__all__ = ["removal_bars", "share_bars"]

_FONT = 'font-family="DejaVu Sans, Arial, sans-serif"'
_MEDIAN, _P90, _INK, _GRID = "#1f5fa8", "#9cc1ea", "#1d2935", "#d9dee4"


def removal_bars(by_provider: dict[str, dict[str, Any]], width: int = 720) -> Markup:
    """Median (dark) and p90 (light) hours to removal per provider, slowest first."""
    rows = sorted(
        by_provider.items(),
        key=lambda kv: (kv[1]["median_hours"] is None, -(kv[1]["median_hours"] or 0), kv[0]),
    )
    if not rows:
        return Markup('<p class="empty">No takedown trail in the ledger yet.</p>')
    top = max((r["p90_hours"] or 0 for _, r in rows), default=0) or 1
    left, bar, gap, head = 110, 14, 8, 28
    plot = width - left - 70
    height = head + len(rows) * (bar + gap) + 24
    out = [
        f'<svg class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {_FONT} font-size="12" '
        'aria-label="median and p90 hours to removal by provider">',
        f'<text x="{left}" y="16" fill="{_INK}">hours to removal: '
        f'<tspan fill="{_MEDIAN}">■ median</tspan> <tspan fill="{_P90}">■ p90</tspan></text>',
    ]
    for i in range(5):
        x = left + plot * i / 4
        out.append(
            f'<line x1="{x:.0f}" y1="{head - 4}" x2="{x:.0f}" y2="{height - 20}" '
            f'stroke="{_GRID}"/><text x="{x:.0f}" y="{height - 6}" text-anchor="middle" '
            f'fill="#5b6570">{top * i / 4:.0f}</text>'
        )
    for n, (provider, row) in enumerate(rows):
        y = head + n * (bar + gap)
        out.append(
            f'<text x="{left - 8}" y="{y + bar - 2}" text-anchor="end" fill="{_INK}">'
            f"{escape(provider)}</text>"
        )
        median, p90 = row["median_hours"], row["p90_hours"]
        if median is None:
            out.append(f'<text x="{left + 4}" y="{y + bar - 2}" fill="#5b6570">none removed</text>')
            continue
        out.append(
            f'<rect x="{left}" y="{y}" width="{plot * p90 / top:.1f}" height="{bar}" '
            f'fill="{_P90}"/><rect x="{left}" y="{y + 3}" width="{plot * median / top:.1f}" '
            f'height="{bar - 6}" fill="{_MEDIAN}"/>'
            f'<text x="{left + plot * p90 / top + 6:.1f}" y="{y + bar - 2}" fill="{_INK}">'
            f"{median:.1f} h</text>"
        )
    out.append("</svg>")
    return Markup("".join(out))


_SHARES = (
    ("removed_within_2_5d", "≤ 2.5 days", "#1f5fa8"),
    ("removed_within_3d", "≤ 3 days", "#5b8fd0"),
    ("removed_within_7d", "≤ 7 days", "#9cc1ea"),
    ("police_within_3d", "police ≤ 3 days", "#c77d1a"),
)


def share_bars(by_country: dict[str, dict[str, Any]], width: int = 720) -> Markup:
    """Per hosting country: the share of items removed within 2.5 / 3 / 7 days, and to police."""
    if not by_country:
        return Markup("")
    left, group_h, bar = 60, 60, 12
    plot = width - left - 60
    height = 34 + len(by_country) * group_h + 20
    legend = " ".join(
        f'<tspan fill="{colour}">■ {escape(label)}</tspan>' for _, label, colour in _SHARES
    )
    out = [
        f'<svg class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {_FONT} font-size="12" '
        'aria-label="share of items removed in time by hosting country">',
        f'<text x="{left}" y="16" fill="{_INK}">% of items: {legend}</text>',
    ]
    for i in range(5):
        x = left + plot * i / 4
        out.append(
            f'<line x1="{x:.0f}" y1="26" x2="{x:.0f}" y2="{height - 20}" stroke="{_GRID}"/>'
            f'<text x="{x:.0f}" y="{height - 6}" text-anchor="middle" fill="#5b6570">'
            f"{25 * i}%</text>"
        )
    for n, (country, row) in enumerate(sorted(by_country.items())):
        y0 = 30 + n * group_h
        out.append(
            f'<text x="{left - 8}" y="{y0 + group_h / 2:.0f}" text-anchor="end" '
            f'font-weight="bold" fill="{_INK}">{escape(country)}</text>'
        )
        for k, (key, _, colour) in enumerate(_SHARES):
            value = float(row[key])
            y = y0 + k * (bar + 1)
            out.append(
                f'<rect x="{left}" y="{y}" width="{plot * value / 100:.1f}" height="{bar}" '
                f'fill="{colour}"/><text x="{left + plot * value / 100 + 4:.1f}" '
                f'y="{y + bar - 2}" font-size="10" fill="{_INK}">{value:.1f}</text>'
            )
    out.append("</svg>")
    return Markup("".join(out))
