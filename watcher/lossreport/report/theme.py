"""The house style of every chart: grid lines, a colour-blind-safe palette, clear type and high
contrast, as the feature document's "Graph Styling" asks. One Vega-Lite config, set on each
spec (not registered globally) so charts look the same wherever they are rendered.
"""

from __future__ import annotations

from typing import Any

# Okabe & Ito's palette, ordered so the first colours are the most distinct on white.
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
RAW_COLOUR = "#56B4E9"
SMOOTH_COLOUR = "#0072B2"
MEAN_COLOUR = "#444444"
# NaN/inf steps: a red no curve uses, named by the word the captions, the report page and the
# README say (tests check the three agree, and that the colour is a red).
NAN_COLOUR, NAN_COLOUR_NAME = "#D62728", "red"
FONT = "DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif"
TEXT_COLOUR = "#111111"

CONFIG: dict[str, Any] = {
    "background": "#ffffff",
    "font": FONT,
    "padding": 12,
    "view": {"stroke": "#888888", "strokeWidth": 0.8},
    "range": {"category": PALETTE},
    "title": {
        "fontSize": 15,
        "fontWeight": "bold",
        "color": TEXT_COLOUR,
        "anchor": "start",
        "subtitleFontSize": 11,
        "subtitleColor": "#333333",
        "subtitlePadding": 4,
        "offset": 8,
    },
    "axis": {
        "labelFontSize": 11,
        "titleFontSize": 12,
        "labelColor": TEXT_COLOUR,
        "titleColor": TEXT_COLOUR,
        "titleFontWeight": "normal",
        "domainColor": "#333333",
        "tickColor": "#333333",
        "grid": True,
        "gridColor": "#d9d9d9",
        "gridWidth": 0.7,
        "labelFlush": True,
    },
    "legend": {
        "labelFontSize": 11,
        "titleFontSize": 11,
        "labelColor": TEXT_COLOUR,
        "titleColor": TEXT_COLOUR,
        "symbolStrokeWidth": 2.5,
        "labelLimit": 320,
    },
    "line": {"strokeWidth": 1.6},
}


def colours(count: int) -> list[str]:
    """`count` series colours; past eight the palette repeats (the legend still tells them apart
    by name)."""
    return [PALETTE[index % len(PALETTE)] for index in range(count)]
