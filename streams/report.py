# ruff: noqa: E501  (the rules table, the inline CSS and the HTML text read better unwrapped)
"""The persona report: `schemas.analytics.PersonaReport` → one self-contained HTML file (inline CSS and
SVG, no script, no external resource: it opens offline and prints one segment per block).

Recommended actions are drawn from a segment's KPIs against all visitors (the baseline `*`) by the
rules below, in this order; each states its threshold, and a segment no rule fits gets "observe".

| rule | when | action |
|---|---|---|
| `high_value` | revenue per user ≥ 2 × all visitors' | protect and grow: loyalty offers, early access, CRM; keep discounts away |
| `browse_no_buy` | page views per user ≥ 1.5 × and conversion < all visitors' | retarget with the top categories' products, exit-intent offer |
| `low_conversion` | conversion < 0.5 × all visitors', ≥ 20 visitors | lower the barrier: coupon e-mail, free shipping on the top category |
| `small_baskets` | conversion ≥ all visitors', average order value < 0.8 × | bundles and upsell at the cart |
| `lapsed` | median recency ≥ 30 days | win-back campaign on e-mail and ads |
| `mobile_first` | most of its visitors on mobile (≥ 60 %) | mobile-first creatives; Instagram and Facebook placements |
| `search_led` | search is its first traffic source | Google Ads on its top categories and products |
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from schemas.analytics import Persona, PersonaReport, Recommendation, TopValue
from sinks.kpis import ALL_VISITORS

BREAKDOWN_TITLES = {
    "categories": "Top categories",
    "products": "Top products",
    "devices": "Devices",
    "os": "Operating systems",
    "regions": "Regions",
    "cities": "Cities",
    "traffic_sources": "Traffic sources",
}


def recommendations(persona: Persona, baseline: Persona) -> list[Recommendation]:
    """The actions the module's rules draw from `persona`'s KPIs against `baseline`'s."""
    k, b = persona.kpis, baseline.kpis
    out: list[Recommendation] = []
    if k is not None and b is not None:
        if b.revenue_per_user > 0 and k.revenue_per_user >= 2 * b.revenue_per_user:
            out.append(
                Recommendation(
                    rule="high_value",
                    text=(
                        f"Revenue per user {k.revenue_per_user:,.2f} is {k.revenue_per_user / b.revenue_per_user:.1f}× "
                        "all visitors': protect and grow it with loyalty offers, early access and CRM follow-up; "
                        "keep it out of discount campaigns."
                    ),
                )
            )
        if (
            b.page_views_per_user > 0
            and k.page_views_per_user >= 1.5 * b.page_views_per_user
            and k.conversion_rate < b.conversion_rate
        ):
            out.append(
                Recommendation(
                    rule="browse_no_buy",
                    text=(
                        f"{k.page_views_per_user:.1f} page views per user but {100 * k.conversion_rate:.1f} % conversion "
                        f"(all visitors {100 * b.conversion_rate:.1f} %): retarget with products of its top categories "
                        "and show an exit-intent offer."
                    ),
                )
            )
        if b.conversion_rate > 0 and k.conversion_rate < 0.5 * b.conversion_rate and k.visitors >= 20:
            out.append(
                Recommendation(
                    rule="low_conversion",
                    text=(
                        f"Conversion {100 * k.conversion_rate:.1f} % is under half of all visitors' "
                        f"{100 * b.conversion_rate:.1f} %: lower the barrier with a coupon e-mail or free shipping "
                        f"on {_first(persona, 'categories') or 'its top category'}."
                    ),
                )
            )
        if (
            k.conversion_rate >= b.conversion_rate > 0
            and baseline.average_order_value > 0
            and 0 < persona.average_order_value < 0.8 * baseline.average_order_value
        ):
            out.append(
                Recommendation(
                    rule="small_baskets",
                    text=(
                        f"Buys often but small: average order {persona.average_order_value:,.2f} against "
                        f"{baseline.average_order_value:,.2f}; offer bundles and upsell at the cart."
                    ),
                )
            )
    if persona.recency_days >= 30:
        out.append(
            Recommendation(
                rule="lapsed",
                text=(
                    f"Median {persona.recency_days:.0f} days since the last visit: run a win-back campaign on e-mail and ads."
                ),
            )
        )
    devices = persona.breakdowns.get("devices", [])
    if (
        devices
        and persona.visitors
        and devices[0].value == "mobile"
        and devices[0].visitors >= 0.6 * persona.visitors
    ):
        out.append(
            Recommendation(
                rule="mobile_first",
                text=(
                    f"{100 * devices[0].visitors / persona.visitors:.0f} % on mobile: mobile-first creatives, "
                    "Instagram and Facebook placements."
                ),
            )
        )
    if _first(persona, "traffic_sources") == "search":
        top = _first(persona, "categories") or _first(persona, "products") or "its top categories"
        out.append(Recommendation(rule="search_led", text=f"Comes mostly from search: Google Ads on {top}."))
    if not out:
        out.append(
            Recommendation(
                rule="observe",
                text=("No KPI departs from all visitors' by a rule's threshold: keep observing."),
            )
        )
    return out


def _first(persona: Persona, breakdown: str) -> str | None:
    values = persona.breakdowns.get(breakdown)
    return values[0].value if values else None


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _bars(values: Sequence[TopValue], total: int) -> str:
    """A horizontal bar chart (inline SVG) of top values with their share of `total` visitors."""
    if not values:
        return '<p class="none">no data</p>'
    row, label_w, width = 16, 150, 330
    top = max(v.visitors for v in values) or 1
    parts = [f'<svg width="{width}" height="{row * len(values) + 2}" role="img">']
    for i, v in enumerate(values):
        w = max(1.0, (width - label_w - 70) * v.visitors / top)
        share = f"{100 * v.visitors / total:.0f} %" if total else ""
        parts.append(
            f'<text x="0" y="{i * row + 12}">{_e(v.value[:24])}</text>'
            f'<rect x="{label_w}" y="{i * row + 3}" width="{w:.1f}" height="10" fill="#2f6fde"/>'
            f'<text x="{label_w + w + 4:.1f}" y="{i * row + 12}">{v.visitors} · {share}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _kpi_index(persona: Persona, baseline: Persona) -> str:
    """The five KPIs beside all visitors', as index bars (all visitors = 100)."""
    k, b = persona.kpis, baseline.kpis
    if k is None or b is None:
        return '<p class="none">no events while in the segment</p>'
    rows = [
        ("purchases", f"{k.purchases:,}", None),
        ("conversion rate", f"{100 * k.conversion_rate:.2f} %", (k.conversion_rate, b.conversion_rate)),
        ("revenue", f"{k.revenue:,.2f}", None),
        ("revenue per user", f"{k.revenue_per_user:,.2f}", (k.revenue_per_user, b.revenue_per_user)),
        (
            "page views per user",
            f"{k.page_views_per_user:.2f}",
            (k.page_views_per_user, b.page_views_per_user),
        ),
    ]
    out = ['<table class="kpis"><tr><th>KPI</th><th>segment</th><th>index (all visitors = 100)</th></tr>']
    for name, shown, pair in rows:
        bar = ""
        if pair is not None and pair[1] > 0:
            index = 100 * pair[0] / pair[1]
            bar = (
                f'<svg width="170" height="12"><rect width="{min(150.0, index / 2):.1f}" height="10" '
                f'fill="{"#2e9d5b" if index >= 100 else "#d0503c"}"/><line x1="50" x2="50" y1="0" y2="12" '
                f'stroke="#333"/><text x="{min(150.0, index / 2) + 3:.1f}" y="10">{index:.0f}</text></svg>'
            )
        out.append(f"<tr><td>{name}</td><td>{shown}</td><td>{bar}</td></tr>")
    out.append("</table>")
    return "".join(out)


CSS = """
body{font:13px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2433;margin:24px auto;max-width:1000px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:0 0 2px}h3{font-size:13px;margin:10px 0 4px;color:#4b5366}
.meta{color:#6b7385}.persona{border:1px solid #e3e6ee;border-radius:6px;padding:12px 16px;margin:16px 0;break-inside:avoid}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:4px 24px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}td,th{padding:2px 8px;border-bottom:1px solid #eef0f5;text-align:left}
.facts td:last-child{text-align:right}svg text{font-size:11px;fill:#333}.none{color:#6b7385;font-style:italic}
ul.actions{margin:4px 0 0 18px;padding:0}ul.actions code{color:#6b7385}
@media print{body{margin:0;max-width:none}.persona{page-break-inside:avoid}}
"""


def render_html(report: PersonaReport) -> str:
    """The report as one HTML document."""
    baseline = next(p for p in report.personas if p.segment == ALL_VISITORS)
    segments = [p for p in report.personas if p.segment != ALL_VISITORS]
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        "<title>Tessera — persona report</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>Persona report</h1>",
        f'<p class="meta">Generated {_e(report.generated_at.strftime("%Y-%m-%d %H:%M UTC"))} · definitions '
        f"{_e(report.definition_version)} · {baseline.members:,} visitors seen · {len(segments)} segments with "
        "members. Figures count the events each visitor made while in the segment; the index compares a "
        "KPI with all visitors' (= 100).</p>",
        '<table class="facts"><tr><th>segment</th><th>members</th><th>share</th><th>purchases</th>'
        "<th>revenue</th><th>revenue per user</th></tr>",
    ]
    for p in segments:
        k = p.kpis
        parts.append(
            f'<tr><td><a href="#{_e(p.segment)}">{_e(p.segment)}</a></td><td>{p.members:,}</td>'
            f"<td>{100 * p.share:.1f} %</td><td>{k.purchases if k else 0:,}</td>"
            f"<td>{k.revenue if k else 0:,.2f}</td><td>{k.revenue_per_user if k else 0:,.2f}</td></tr>"
        )
    parts.append("</table>")
    for p in [*segments, baseline]:
        title = "All visitors (baseline)" if p.segment == ALL_VISITORS else p.segment
        description = report.descriptions.get(p.segment, "")
        parts.append(f'<section class="persona" id="{_e(p.segment)}" data-segment="{_e(p.segment)}">')
        parts.append(f'<h2>{_e(title)}</h2><p class="meta">{_e(description)}</p>')
        parts.append(
            f'<table class="facts"><tr><td>members</td><td>{p.members:,} ({100 * p.share:.1f} % of visitors)</td></tr>'
            f"<tr><td>average order value</td><td>{p.average_order_value:,.2f}</td></tr>"
            f"<tr><td>recency (median days since last event)</td><td>{p.recency_days:.1f}</td></tr>"
            f"<tr><td>frequency (sessions per visitor)</td><td>{p.frequency_sessions:.2f}</td></tr></table>"
        )
        parts.append("<h3>KPIs against all visitors</h3>" + _kpi_index(p, baseline))
        parts.append('<div class="grid">')
        for name, heading in BREAKDOWN_TITLES.items():
            parts.append(f"<div><h3>{heading}</h3>{_bars(p.breakdowns.get(name, []), p.visitors)}</div>")
        parts.append("</div>")
        if p.segment != ALL_VISITORS:
            parts.append('<h3>Recommended actions</h3><ul class="actions">')
            for r in recommendations(p, baseline):
                parts.append(f"<li>{_e(r.text)} <code>{_e(r.rule)}</code></li>")
            parts.append("</ul>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
