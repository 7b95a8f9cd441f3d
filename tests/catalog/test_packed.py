"""A run's packed details (packed.py) come back as a page shows them: steps exact, each value
within its curve's 16-bit level and to 4 significant digits, the curves' JSON safe inside a
<script> block; a blob whose numbers are not JSON's (an infinite range) gives no curves."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np

from lossreport.catalog import legacy_curves, packed
from lossreport.runformat import packed as packing

FIELDS = {
    "final": {"mse_loss": 0.25},
    "minimum": {"mse_loss": 0.125},
    "config": {"lr": "0.0003", "note": "</script><b>Ωmega</b>"},
    "alerts": [],
}
CURVES = {
    "mse_loss": [[step * 812, 3.0 / (1 + step) ** 1.3] for step in range(60)],
    "l1 <loss> & more": [[step, 1e-5 * (60 - step) + 2e-7] for step in range(60)],
    "overall_loss": [[step * 1234.5, 12345.678 - step * 17.25] for step in range(60)],
    "flat_loss": [[step, 0.5] for step in range(10)],
    "no_points_yet": [],
}


def _close_to(found: dict[str, list[list[float]]]) -> None:
    assert found.keys() == CURVES.keys()
    for name, points in CURVES.items():
        assert len(found[name]) == len(points), name
        values = [value for _, value in points]
        level = (max(values, default=0) - min(values, default=0)) / packing.LEVELS
        for (step, value), (kept_step, kept) in zip(points, found[name], strict=True):
            assert kept_step == step and type(kept_step) is type(step), name
            assert float(f"{kept:.4g}") == kept, (name, kept)  # 4 significant digits
            assert math.isclose(kept, value, rel_tol=1e-3, abs_tol=level), (name, value, kept)


def test_curves_come_back_exact_in_steps_and_to_four_digits() -> None:
    fields, curves_json = packed.unpack(packing.pack(FIELDS, CURVES))
    assert fields == FIELDS
    assert not {"<", ">", "&"} & set(curves_json)  # a loss's name cannot close the <script>
    _close_to(json.loads(curves_json))


def test_curves_of_schema_2_come_back_the_same() -> None:
    _close_to(json.loads(legacy_curves.decode(legacy_curves.encode(CURVES))))


def _by_hand(low: float, high: float, shapes: object = (("mse_loss", 2, "i"),)) -> bytes:
    """A blob as no daemon writes one: a curve of two points over the range `low` to `high`."""
    head = json.dumps({**FIELDS, "curves": shapes}).encode()
    numbers = (
        packing._places(np.array([0, 10], dtype="<i8").tobytes(), 8)
        + np.array([low, high], dtype="<f8").tobytes()
        + packing._places(np.array([0, packing.LEVELS], dtype="<u2").tobytes(), 2)
    )
    compressor = zlib.compressobj(9, zdict=packing.WORDS)
    data = len(head).to_bytes(4, "little") + head + numbers
    return compressor.compress(data) + compressor.flush()


def test_a_blob_with_an_infinite_range_gives_no_curves() -> None:
    """The values would be `inf` or NaN, which JSON has not."""
    for low, high in ((0.0, math.inf), (-math.inf, 1.0), (math.nan, 1.0), (-1e308, 1e308)):
        fields, curves_json = packed.unpack(_by_hand(low, high))
        assert (fields["config"], curves_json) == ({}, "{}"), (low, high)


def test_a_bad_blob_among_a_page_spoils_only_its_own_row() -> None:
    """A page's blobs are decoded together (`unpack_many`): each bad one is its row's alone."""
    good = packing.pack(FIELDS, CURVES)
    bad = [
        _by_hand(0.0, math.inf),
        _by_hand(0.0, 1.0, shapes=[["mse_loss", 200, "i"]]),  # its numbers end too soon
        _by_hand(0.0, 1.0, shapes=[["mse_loss", -1, "i"]]),
        b"not zlib",
        None,
    ]
    page = [good, *bad, _by_hand(0.0, 1.0), good]
    unpacked = packed.unpack_many(page)
    assert [curves for _, curves in unpacked[1:6]] == ["{}"] * 5
    assert json.loads(unpacked[6][1]) == {"mse_loss": [[0, 0.0], [10, 1.0]]}
    for fields, curves_json in (unpacked[0], unpacked[-1]):
        assert fields == FIELDS
        _close_to(json.loads(curves_json))
