"""Charts as inline SVG, drawn on the server: the flows heat map and a case's swim lanes.

Pure functions from the ledger views (:mod:`broker.ledger.views`) to markup;
every text is escaped, colours are presentation attributes (the console's CSP
allows no inline style), and nothing but ids, organisations, jurisdictions,
event names and times is drawn.
"""

from __future__ import annotations

from datetime import UTC, datetime

from markupsafe import Markup, escape

from broker.ledger.views import Flows, Trace

__all__ = ["LANES_WIDTH", "MIN_STEP", "heat_map", "lane_rows", "swim_lanes"]

_FONT = 'font-family="DejaVu Sans, Arial, sans-serif"'


def _shade(value: int, top: int) -> tuple[str, str]:
    """(fill, text colour) for ``value`` on a white → deep blue scale up to ``top``."""
    if value <= 0 or top <= 0:
        return "#f4f6f8", "#5b6570"
    t = 0.15 + 0.85 * (value / top)
    r = round(235 - t * (235 - 16))
    g = round(242 - t * (242 - 62))
    b = round(250 - t * (250 - 128))
    return f"#{r:02x}{g:02x}{b:02x}", "#ffffff" if t > 0.5 else "#10233f"


def heat_map(flows: Flows) -> Markup:
    """Origin organisations (rows) × destination jurisdictions (columns), referral counts."""
    rows = sorted(flows.matrix)
    cols = flows.columns
    if not rows or not cols:
        return Markup('<p class="empty">No referral routed yet.</p>')
    cw, ch, left, top = 80, 38, 120, 44
    width, height = left + cw * len(cols) + 10, top + ch * len(rows) + 10
    top_value = max((n for row in flows.matrix.values() for n in row.values()), default=0)
    out = [
        f'<svg class="heatmap" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {_FONT} font-size="13" '
        'aria-label="referrals by origin and jurisdiction">'
    ]
    for j, col in enumerate(cols):
        x = left + j * cw + cw / 2
        out.append(
            f'<text x="{x:.0f}" y="{top - 14}" text-anchor="middle" font-weight="bold" '
            f'fill="#1d2935">{escape(col if len(col) <= 10 else col[:9] + "…")}</text>'
        )
    for i, origin in enumerate(rows):
        y = top + i * ch
        out.append(
            f'<text x="{left - 10}" y="{y + ch / 2 + 5:.0f}" text-anchor="end" '
            f'font-weight="bold" fill="#1d2935">{escape(origin)}</text>'
        )
        for j, col in enumerate(cols):
            n = flows.matrix[origin].get(col, 0)
            fill, ink = _shade(n, top_value)
            x = left + j * cw
            out.append(
                f'<g class="cell"><title>{escape(origin)} → {escape(col)}: {n}</title>'
                f'<rect x="{x + 1}" y="{y + 1}" width="{cw - 2}" height="{ch - 2}" rx="3" '
                f'fill="{fill}" stroke="#d5dbe1"/>'
                f'<text x="{x + cw / 2:.0f}" y="{y + ch / 2 + 5:.0f}" text-anchor="middle" '
                f'fill="{ink}">{n if n else "·"}</text></g>'
            )
    out.append("</svg>")
    return Markup("".join(out))


#: Lane colours by event family.
_EVENT_COLOURS = {
    "PUBLISHED": "#2f6fba",
    "REPUBLISHED": "#2f6fba",
    "ROUTED": "#7b4fb0",
    "DELIVERED": "#1f8a4c",
    "STATUS_SENT": "#c46a00",
    "STATUS_ROUTED": "#a0661a",
    "DEAD_LETTERED": "#c0392b",
    "REJECTED": "#c0392b",
    "ACCESSED": "#5d6d7e",
    "AMENDED": "#2f6fba",
    "REROUTED": "#8e44ad",
}


def _clock(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%H:%M:%S")


#: Width the lane chart fits in (the trace card at a 1280-pixel window).
LANES_WIDTH = 1180
#: Narrowest column per hop: two neighbours' labels (on alternating rows) never touch.
MIN_STEP = 80
_LANE_H, _LEFT, _TOP, _RIGHT = 56, 130, 96, 30


def lane_rows(hops: int, width: int = LANES_WIDTH) -> list[range]:
    """The hops (by index) of each band of the chart: as many bands as needed so that
    each fits ``width`` with at least :data:`MIN_STEP` pixels per hop, balanced."""
    if hops <= 0:
        return []
    fit = max(1, (width - _LEFT - _RIGHT) // MIN_STEP)
    bands = -(-hops // fit)
    per_band = -(-hops // bands)
    return [range(b, min(b + per_band, hops)) for b in range(0, hops, per_band)]


def swim_lanes(t: Trace) -> Markup:
    """A case's hops as a timeline: one lane per organisation, a column per hop, arrows for
    handovers from one organisation to another.

    A long trace wraps: the hops go on in further bands below (each with the lanes
    again and its hop numbers), so every label is readable without scrolling.
    """
    lanes: list[str] = []
    for hop in t.hops:
        r = hop.record
        for party in (r.from_party, r.actor, *r.to_orgs):
            if party and party not in lanes:
                lanes.append(party)
    bands = lane_rows(len(t.hops))
    per_band = max((len(b) for b in bands), default=1)
    step = max(MIN_STEP, min(104, (LANES_WIDTH - _LEFT - _RIGHT) // per_band))
    width = _LEFT + step * per_band + _RIGHT
    band_h = _TOP + _LANE_H * len(lanes) + 20
    height = band_h * max(len(bands), 1)
    out = [
        f'<svg class="lanes" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {_FONT} font-size="12" '
        'aria-label="handover timeline by organisation">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#44515e"/></marker></defs>',
    ]
    for n, band in enumerate(bands):
        out.extend(_band(t, band, lanes, n * band_h, step, width, len(bands) > 1))
    out.append("</svg>")
    return Markup("".join(out))


def _band(
    t: Trace, band: range, lanes: list[str], y0: int, step: int, width: int, numbered: bool
) -> list[str]:
    """One band of the lane chart: the lanes and the hops ``band``, from ``y0`` down."""
    top = y0 + _TOP
    y_of = {org: top + i * _LANE_H + _LANE_H / 2 for i, org in enumerate(lanes)}
    out = []
    if numbered:
        out.append(
            f'<text x="10" y="{y0 + 16}" fill="#5b6570">hops {band.start + 1}–{band.stop}'
            f" of {len(t.hops)}</text>"
        )
    for i, org in enumerate(lanes):
        lane_y = top + i * _LANE_H
        fill = "#f7f9fb" if i % 2 == 0 else "#eef2f6"
        out.append(
            f'<rect x="0" y="{lane_y}" width="{width}" height="{_LANE_H}" fill="{fill}"/>'
            f'<text x="10" y="{lane_y + _LANE_H / 2 + 4:.0f}" font-weight="bold" '
            f'fill="#1d2935">{escape(org)}</text>'
        )
    for col, k in enumerate(band):
        hop = t.hops[k]
        r = hop.record
        x = _LEFT + col * step + step / 2
        colour = _EVENT_COLOURS.get(r.event, "#44515e")
        y = y_of.get(r.actor, float(top))
        targets = [o for o in r.to_orgs if o in y_of and o != r.actor]
        for target in targets:
            out.append(
                f'<line x1="{x:.0f}" y1="{y:.0f}" x2="{x:.0f}" y2="{y_of[target]:.0f}" '
                f'stroke="{colour}" stroke-width="1.6" stroke-dasharray="4 3" '
                'marker-end="url(#arrow)"/>'
            )
        source = r.from_party
        if source and source in y_of and source != r.actor:
            out.append(
                f'<line x1="{x - 14:.0f}" y1="{y_of[source]:.0f}" x2="{x - 14:.0f}" '
                f'y2="{y:.0f}" stroke="#9aa5b1" stroke-width="1.2" marker-end="url(#arrow)"/>'
            )
        since = hop.since_previous.total_seconds() if hop.since_previous is not None else None
        when = _clock(r.at) if since is None else f"+{since:.2f}s"
        out.append(
            f'<g class="hop"><title>{k + 1}. {escape(r.event)} by {escape(r.actor)} at '
            f"{escape(r.at.astimezone(UTC).isoformat())}"
            f"{' on ' + str(escape(r.topic)) if r.topic else ''}"
            f"{' (' + str(escape(r.reason)) + ')' if r.reason else ''}</title>"
            f'<circle cx="{x:.0f}" cy="{y:.0f}" r="8" fill="{colour}" stroke="#ffffff" '
            'stroke-width="2"/></g>'
        )
        label_y = top - 62 if col % 2 else top - 24
        out.append(
            f'<line x1="{x:.0f}" y1="{label_y + 17}" x2="{x:.0f}" y2="{top}" stroke="#c7cfd8" '
            'stroke-width="1"/>'
            f'<text x="{x:.0f}" y="{label_y - 12}" text-anchor="middle" font-weight="bold" '
            f'fill="{colour}">{escape(r.event.replace("_", " "))}</text>'
            f'<text x="{x:.0f}" y="{label_y + 1}" text-anchor="middle" '
            f'fill="#44515e">{escape(when)}</text>'
        )
        if r.event.startswith("STATUS") or (r.reason and r.reason.isupper() and len(r.reason) < 16):
            out.append(
                f'<text x="{x:.0f}" y="{label_y + 13}" text-anchor="middle" font-size="10" '
                f'fill="#44515e">{escape((r.reason or "")[:15])}</text>'
            )
    return out
