"""Helpers that write single VOC items (good or deliberately broken) into a year folder under ``tmp_path``."""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

# (name, (xmin, ymin, xmax, ymax), difficult) in VOC pixels
Obj = tuple[str, tuple[float, float, float, float], bool]


def voc_xml(image_id: str, width: int, height: int, objects: Sequence[Obj]) -> str:
    objs = "".join(
        f"<object><name>{name}</name><difficult>{int(diff)}</difficult><bndbox><xmin>{b[0]}</xmin>"
        f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, diff in objects)
    return (f"<annotation><filename>{image_id}.jpg</filename><size><width>{width}</width>"
            f"<height>{height}</height><depth>3</depth></size>{objs}</annotation>")


def jpeg_bytes(width: int, height: int, seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_root(base: Path, name: str = "VOC2007") -> Path:
    root = base / name
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    return root


def add_item(root: Path, image_id: str, objects: Sequence[Obj], width: int = 64, height: int = 48,
             split: str = "trainval", xml: str | None = None, jpeg: bytes | None = None) -> None:
    """Write ``<id>.xml`` + ``<id>.jpg`` (either may be overridden, ``b""`` = do not write) and list the id."""
    if xml != "":
        text = voc_xml(image_id, width, height, objects) if xml is None else xml
        (root / "Annotations" / f"{image_id}.xml").write_text(text)
    if jpeg != b"":
        (root / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg_bytes(width, height) if jpeg is None else jpeg)
    with open(root / "ImageSets" / "Main" / f"{split}.txt", "a") as fh:
        fh.write(f"{image_id}\n")


GOOD: list[Obj] = [("dog", (11, 21, 40, 45), False)]
