"""The data fingerprint of a split: what a run trained on, cheap enough to record in every checkpoint and to
check on resume (``ssd_torch.training.resume``) and to key ssd-eval's detection cache.

It hashes the image ids and the annotation content of each image (size, boxes in VOC pixels, class *names*,
difficult / crowd flags, as ``dataset.annotation(i)`` gives them: see ``ssd_torch.data.voc.Annotation``), never
the image pixels: no image file is opened. A record (:func:`fingerprint_record`) is a JSON-able dict::

    {"split": "trainval", "count": 5011, "ids_sha256": "...", "annotations_sha256": "...",
     "images": {"000005": "1a2b3c4d", ...}}

``images`` holds an 8-hex digest per image so that :func:`compare_fingerprints` can say how many images were
removed, added or changed ("split trainval: 16 images removed, 0 added, 3 annotations changed"); without it
(an older or trimmed record) only the counts and whole-split hashes are compared.
"""
from __future__ import annotations

import hashlib
from typing import Any, Optional

import numpy as np

__all__ = ["fingerprint_record", "split_fingerprint", "compare_fingerprints"]

_IMAGE_DIGEST_HEX = 8


def _annotation_bytes(ann: Any, class_names: tuple[str, ...]) -> bytes:
    """Canonical bytes of one image's ground truth: id, size, and per box its float64 pixels, class name and
    flag (class names, not label numbers: a reordered class list is not a data change)."""
    names = [class_names[int(k) - 1] if 0 < int(k) <= len(class_names) else f"#{int(k)}" for k in ann.labels]
    head = f"{ann.image_id}\0{int(ann.width)}\0{int(ann.height)}\0{len(names)}\0{chr(31).join(names)}\0"
    boxes = np.ascontiguousarray(np.asarray(ann.boxes, dtype=np.float64).reshape(-1, 4))
    flags = np.ascontiguousarray(np.asarray(ann.difficult, dtype=np.uint8).reshape(-1))
    return head.encode("utf-8", "surrogatepass") + boxes.tobytes() + flags.tobytes()


def fingerprint_record(dataset: Any, split: str = "") -> dict[str, Any]:
    """The fingerprint record of ``dataset`` (any reader of the ``DetectionDataset`` contract, or ``FirstN`` of
    one): see the module docstring. ``split`` names it in messages. Reads annotations only."""
    class_names = tuple(getattr(dataset, "class_names", ()))
    ids_hash, ann_hash = hashlib.sha256(), hashlib.sha256()
    images: dict[str, str] = {}
    for i in range(len(dataset)):
        ann = dataset.annotation(i)
        image_id = str(ann.image_id)
        ids_hash.update(image_id.encode("utf-8", "surrogatepass") + b"\n")
        content = _annotation_bytes(ann, class_names)
        ann_hash.update(hashlib.sha256(content).digest())
        images[image_id] = hashlib.sha256(content).hexdigest()[:_IMAGE_DIGEST_HEX]
    return {"split": split, "count": len(dataset), "ids_sha256": ids_hash.hexdigest(),
            "annotations_sha256": ann_hash.hexdigest(), "images": images}


def split_fingerprint(dataset: Any) -> str:
    """One hex digest of a split's image ids (in order) and annotation content: equal digests, same data."""
    record = fingerprint_record(dataset)
    return hashlib.sha256(f"{record['ids_sha256']}:{record['annotations_sha256']}".encode()).hexdigest()


def compare_fingerprints(old: dict[str, Any], new: dict[str, Any]) -> Optional[str]:
    """None when the two records describe the same split data; else one line saying what changed, e.g.
    ``"split trainval: 16 images removed, 0 added, 3 annotations changed"`` (``"..., order changed"`` when only
    the order differs). Records without ``images`` give the counts and which hash differs."""
    name = new.get("split") or old.get("split") or "?"
    if (old.get("ids_sha256"), old.get("annotations_sha256")) == (new.get("ids_sha256"),
                                                                   new.get("annotations_sha256")):
        return None
    before, after = old.get("images"), new.get("images")
    if not isinstance(before, dict) or not isinstance(after, dict):
        what = [w for w, key in (("image ids", "ids_sha256"), ("annotations", "annotations_sha256"))
                if old.get(key) != new.get(key)]
        return (f"split {name}: {old.get('count')} images before, {new.get('count')} now; "
                f"{' and '.join(what)} changed")
    removed = len(before.keys() - after.keys())
    added = len(after.keys() - before.keys())
    changed = sum(1 for k in before.keys() & after.keys() if before[k] != after[k])
    line = f"split {name}: {removed} images removed, {added} added, {changed} annotations changed"
    if removed == added == changed == 0:
        line += " (the image order changed)"
    return line
