"""Charts for the HTML report, drawn by matplotlib as inline SVG (no network, no JavaScript).

Colours are the Okabe-Ito palette (distinguishable with the common colour-vision deficiencies) and
every stance also has its own hatch, so the charts stay readable in grey-scale print. The SVG is
cleaned for inlining into HTML: no XML prolog or DOCTYPE, no namespace URLs, no matplotlib
``figure_1``-style ids (they would collide between charts); ids that are referenced (clip paths,
hatches) are salted per chart by matplotlib's ``svg.hashsalt``.
"""
from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Sequence
from datetime import date

# One colour and one hatch per dominant stance (the article-level categories of a report).
STANCES: tuple[str, ...] = ("pro", "anti", "mixed", "neutral")
COLOURS = {"pro": "#0072B2", "anti": "#D55E00", "mixed": "#CC79A7", "neutral": "#999999", "error": "#000000"}
HATCHES = {"pro": "//", "anti": "\\\\", "mixed": "xx", "neutral": ""}
MAX_OUTLETS = 15
_STRIP = (
    re.compile(r"<\?xml[^>]*\?>\s*"),
    re.compile(r"<!DOCTYPE[^>]*>\s*"),
    re.compile(r'\s+xmlns(?::\w+)?="[^"]*"'),
    re.compile(r'\s+id="[a-z]+_\d+"'),
    re.compile(r"<metadata>.*?</metadata>\s*", re.S),
)


def stance_index_histogram(indices: Sequence[float | None]) -> str:
    """Articles by stance index in ten bins from -1 (all anti) to +1 (all pro)."""
    from matplotlib.figure import Figure

    values = [v for v in indices if v is not None]
    fig = Figure(figsize=(5.2, 2.6), layout="constrained")
    ax = fig.add_subplot()
    bins = [i / 5 - 1 for i in range(11)]
    _, edges, patches = ax.hist(values, bins=bins, color="#777777", edgecolor="white")
    for patch, left in zip(patches, edges):
        centre = left + 0.1
        stance = "pro" if centre > 0.2 else "anti" if centre < -0.2 else "mixed"
        patch.set_facecolor(COLOURS[stance])
        patch.set_hatch(HATCHES[stance])
    ax.set_xlim(-1, 1)
    if not values:
        ax.set_ylim(0, 1)
    ax.set_xlabel("stance index  (−1 all anti … +1 all pro)")
    ax.set_ylabel("articles")
    ax.yaxis.get_major_locator().set_params(integer=True)
    without = len(indices) - len(values)
    ax.set_title(f"{len(values)} articles with stance statements; {without} without", fontsize=9)
    _style(ax)
    return _svg(fig, "index", "Articles by stance index")


def by_date(dates: Sequence[str | None], dominants: Sequence[str]) -> str | None:
    """Articles per day (or per month, over more than 62 days), stacked by dominant stance."""
    parsed = [(_parse_date(d), s) for d, s in zip(dates, dominants)]
    known = [(d, s) for d, s in parsed if d is not None and s in STANCES]
    if not known:
        return None
    monthly = (max(d for d, _ in known) - min(d for d, _ in known)).days > 62
    key = (lambda d: d.strftime("%Y-%m")) if monthly else (lambda d: d.isoformat())
    counts = Counter((key(d), s) for d, s in known)
    periods = sorted({p for p, _ in counts})
    unknown = len(dates) - len(known)
    note = f"; {unknown} without a date (or failed)" if unknown else ""
    return _stacked(periods, counts, "month" if monthly else "day", f"Articles per {'month' if monthly else 'day'}{note}",
                    "date", horizontal=False)


def by_outlet(outlets: Sequence[str | None], dominants: Sequence[str]) -> str | None:
    """Articles of the most frequent outlets, stacked by dominant stance."""
    known = [(str(o), s) for o, s in zip(outlets, dominants) if o not in (None, "") and s in STANCES]
    if not known:
        return None
    totals = Counter(o for o, _ in known)
    top = [o for o, _ in totals.most_common(MAX_OUTLETS)]
    counts = Counter((o, s) for o, s in known if o in totals and o in top)
    rest = len(totals) - len(top)
    note = f" (top {len(top)}; {rest} more outlets not shown)" if rest else ""
    return _stacked(top[::-1], counts, "outlet", f"Articles by outlet{note}", "outlet", horizontal=True)


def _stacked(categories: list[str], counts: Counter, axis: str, title: str, name: str, horizontal: bool) -> str:
    from matplotlib.figure import Figure

    height = max(2.6, 0.28 * len(categories) + 1.2) if horizontal else 2.8
    fig = Figure(figsize=(5.2, height), layout="constrained")
    ax = fig.add_subplot()
    base = [0] * len(categories)
    positions = range(len(categories))
    for stance in STANCES:
        values = [counts.get((c, stance), 0) for c in categories]
        style = {"color": COLOURS[stance], "hatch": HATCHES[stance], "edgecolor": "white", "label": stance}
        if horizontal:
            ax.barh(positions, values, left=base, **style)
        else:
            ax.bar(positions, values, bottom=base, **style)
        base = [b + v for b, v in zip(base, values)]
    labels = [c if len(c) <= 28 else c[:27] + "…" for c in categories]
    if horizontal:
        ax.set_yticks(list(positions), labels, fontsize=8, parse_math=False)  # outlet names are input: no "$" mathtext
        ax.set_xlabel("articles")
        ax.xaxis.get_major_locator().set_params(integer=True)
    else:
        step = max(1, len(categories) // 12)
        ax.set_xticks(list(positions)[::step], labels[::step], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("articles")
        ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, frameon=False, ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    ax.set_title(title, fontsize=9, pad=22)
    _style(ax)
    return _svg(fig, name, title)


def _style(ax) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=8)


def _parse_date(value: str | None) -> date | None:
    """The date of an ISO-like value (``2025-08-12``, ``2025-08-12T10:00:00Z``); None otherwise."""
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def _svg(fig, name: str, label: str) -> str:
    """The figure as an SVG element ready to inline into HTML, labelled for screen readers."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"exportstance-{name}"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buffer.getvalue()
    for pattern in _STRIP:
        svg = pattern.sub("", svg)
    label = label.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    return svg.replace("<svg ", f'<svg role="img" aria-label="{label}" class="chart" ', 1).strip()
