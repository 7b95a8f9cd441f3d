"""Read a PNG's size and resolution from its IHDR and pHYs chunks (the PNG specification)."""

from __future__ import annotations

import struct
from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRES_PER_INCH = 0.0254


def png_size_and_dpi(path: Path) -> tuple[int, int, float | None]:
    data = path.read_bytes()
    assert data.startswith(SIGNATURE), f"{path} is not a PNG"
    offset, width, height, dpi = len(SIGNATURE), 0, 0, None
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"pHYs":
            per_x, per_y, unit = struct.unpack(">IIB", body)
            assert unit == 1, "pHYs unit is not the metre"
            assert per_x == per_y
            dpi = per_x * METRES_PER_INCH
        elif kind == b"IEND":
            break
        offset += 12 + length
    return width, height, dpi
