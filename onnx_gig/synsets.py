"""ImageNet-1k's WordNet IDs (``n01440764``): how ImageNet's own files name classes.

The validation set's ``LOC_val_solution.csv`` and the ImageFolder layout of ``val/`` (``val/n01440764/...``)
name each image's class by its synset, not by an index or a label. ImageNet-1k's classes are its 1000
synsets in sorted order (torchvision, timm and Keras number them so), so a synset is an index once the
model is known to be an ImageNet-1k classifier: its labels are ImageNet's (compared with the synsets'
WordNet lemmas, whatever list the labels came from), or it carries none and has 1000 classes.
"""
from __future__ import annotations

import functools
import re
from importlib import resources
from typing import Optional, Sequence

from .errors import InputError

WNID = re.compile(r"n[0-9]{8}")
CLASSES = 1000
# share of a model's labels that must agree with the synsets' lemmas: label lists differ in a few names
# ("sunglasses" for "sunglass"), a list in another order agrees on almost none
AGREEMENT = 0.95


@functools.lru_cache(maxsize=1)
def synsets() -> tuple[tuple[str, frozenset[str]], ...]:
    """(WordNet ID, its lemmas lowercased) for each of ImageNet-1k's classes, in class-index order."""
    text = resources.files("onnx_gig").joinpath("data/imagenet_synsets.txt").read_text(encoding="utf-8")
    rows = [line.split("\t", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return tuple((wnid, frozenset(_names(lemmas))) for wnid, lemmas in rows)


@functools.lru_cache(maxsize=1)
def _positions() -> dict[str, int]:
    return {wnid: k for k, (wnid, _) in enumerate(synsets())}


def _names(label: str) -> list[str]:
    return [" ".join(n.split()).lower() for n in label.split(",") if n.strip()]


def _agrees(k: int, label: str) -> bool:
    wnid, lemmas = synsets()[k]
    words = str(label).split(None, 1)
    if words and WNID.fullmatch(words[0]):  # Caffe's synset_words.txt: "n01440764 tench, Tinca tinca"
        return words[0] == wnid
    return bool(lemmas.intersection(_names(str(label))))


def imagenet_labels(labels: Sequence[str]) -> bool:
    """Whether ``labels`` are ImageNet-1k's classes in ImageNet's order (any of the usual label lists)."""
    if len(labels) != CLASSES:
        return False
    return sum(_agrees(k, label) for k, label in enumerate(labels)) >= AGREEMENT * CLASSES


def synset_token(text: str) -> Optional[str]:
    """The WordNet ID a class field gives, or None: ``n01440764``, or LOC_val_solution.csv's
    ``n01440764 12 34 56 78 ...`` (the class, then its boxes: the first ID is taken)."""
    words = text.split()
    if words and WNID.fullmatch(words[0]) and all(WNID.fullmatch(w) or w.lstrip("-").isdigit() for w in words[1:]):
        return words[0]
    return None


def synset_index(wnid: str, labels: Optional[Sequence[str]], classes: Optional[int] = None,
                 imagenet: Optional[bool] = None) -> int:
    """The class index of ImageNet-1k's synset ``wnid`` for a model with these ``labels`` (or ``classes``);
    ``imagenet``: ``imagenet_labels(labels)`` if the caller knows it already (a label file asks once per row)."""
    k = _positions().get(wnid)
    if k is None:
        raise InputError(f"class {wnid!r} is a WordNet ID that is not one of ImageNet-1k's {CLASSES} classes")
    if labels is not None and not (imagenet if imagenet is not None else imagenet_labels(labels)):
        raise InputError(f"class {wnid!r} is an ImageNet-1k WordNet ID, and the model's {len(labels)} labels are "
                         "not ImageNet-1k's: give its index or label")
    if labels is None and classes is not None and classes != CLASSES:
        raise InputError(f"class {wnid!r} is an ImageNet-1k WordNet ID, and the model has {classes} classes, "
                         f"not {CLASSES}: give its index")
    return k


__all__ = ["WNID", "imagenet_labels", "synset_index", "synset_token", "synsets"]
