"""Checkpoints of an ``eval`` run, ``OUT_DIR/parts/``: what ``eval --resume`` needs to finish the job.

The paper's protocol scores thousands of images with six methods, hours on a CPU. Each chunk of images
scored (an :class:`~onnx_gig.evaluate.EvalPart`: targets, probabilities, curves and maps) is saved as
soon as it is done, as one ``.npz`` written atomically (no pickle: arrays and one JSON string). With
``--resume`` the chunks saved are loaded and only the images they lack are scored; the tables come out as
one run would have written them. ``parts/run.json`` fingerprints the run: the model's contents, every setting
that changes a number, and the image list itself (the random map depends on each image's index), so a
resumed run cannot mix settings. The folder is removed once the results are written.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import InputError
from .fileio import atomic_path
from .journal import file_digest, input_key, settings_changed

if TYPE_CHECKING:
    from .evaluate import EvalPart

FOLDER = "parts"
FORMAT = 1


def fingerprint(model: str | os.PathLike, paths: Sequence[str | os.PathLike], settings: dict) -> dict:
    """The run's identity: the classifier file, the settings that change a number, and the images in order."""
    images = hashlib.sha256("\n".join(input_key(x) for x in paths).encode("utf-8")).hexdigest()
    return {"onnx_gig_eval": FORMAT, "model_sha256": file_digest(model), **{k: settings[k] for k in sorted(settings)},
            "images": len(paths), "image_list_sha256": images}


class PartStore:
    """The chunks of one eval run in ``out_dir/parts``: saved as they finish, loaded to resume."""

    def __init__(self, out_dir: str | os.PathLike, header: dict) -> None:
        self.dir = Path(out_dir) / FOLDER
        self.header = header

    def _parts(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.npz"))

    def exists(self) -> bool:
        """Whether an earlier run left scored chunks (a fingerprint alone holds nothing worth keeping)."""
        return (self.dir / "run.json").is_file() and bool(self._parts())

    def refuse_unless(self, resume: bool) -> None:
        """An earlier run's chunks are never discarded silently: without ``resume`` they stop the run."""
        if self.exists() and not resume:
            n = len(self._parts())
            raise InputError(f"{self.dir} holds {n} scored chunk{'s' if n != 1 else ''} of an interrupted eval: "
                             f"--resume finishes it; delete {self.dir} to start over")

    def load(self) -> list["EvalPart"]:
        """The chunks an earlier run saved, after checking that it was this run (a damaged chunk runs again)."""
        if not self.exists():
            return []
        try:
            earlier = json.loads((self.dir / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {self.dir / 'run.json'} ({exc}); delete {self.dir} to start over") from None
        said = settings_changed(earlier, self.header)
        if said:
            raise InputError(f"{self.dir} holds an eval with other settings ({said}); resume it with the same model, "
                             f"images and options, or delete {self.dir} to start over")
        parts = []
        for f in self._parts():
            try:
                parts.append(_read(f))
            except (OSError, ValueError, KeyError, EOFError):
                continue  # written atomically, so only a foreign or damaged file; its images are scored again
        return parts

    def start(self) -> None:
        """Begin this run's folder (its fingerprint), unless an earlier run of the same job left chunks in it."""
        if self.exists():
            return
        for stray in self._parts():  # chunks without their run.json belong to no run that can be checked
            stray.unlink()
        with atomic_path(self.dir / "run.json") as tmp:
            tmp.write_text(json.dumps(self.header, indent=1) + "\n", encoding="utf-8")

    def save(self, part: "EvalPart") -> None:
        """One chunk's scored images, atomically, named by its first one (unreadable images are tried again)."""
        if not len(part.indices):
            return
        with atomic_path(self.dir / f"part-{int(part.indices.min()):08d}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **_arrays(part))

    def clear(self) -> None:
        """The results are written: the chunks have served."""
        shutil.rmtree(self.dir, ignore_errors=True)


def _arrays(part: "EvalPart") -> dict[str, np.ndarray]:
    out = {"indices": part.indices, "targets": part.targets, "probs": part.probs}
    out.update({f"curves|{k}|{m}": c for k, per in part.curves.items() for m, c in per.items()})
    out.update({f"x|{k}": v for k, v in part.x.items()})
    out.update({f"maps|{m}": v for m, v in part.maps.items()})
    meta = {"seconds": part.seconds, "errors": [list(e) for e in part.errors], "hw": list(part.hw),
            "provider": part.provider, "preprocess": part.preprocess}
    out["meta"] = np.asarray(json.dumps(meta))
    return out


def _read(path: Path) -> "EvalPart":
    from .evaluate import EvalPart

    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("meta")))
    curves: dict[str, dict[str, np.ndarray]] = {}
    x, maps = {}, {}
    for key, v in arrays.items():
        head, _, rest = key.partition("|")
        if head == "curves":
            kind, _, m = rest.partition("|")
            curves.setdefault(kind, {})[m] = v
        elif head == "x":
            x[rest] = v
        elif head == "maps":
            maps[rest] = v
    # an earlier run's unreadable images are tried again: only the scored ones are kept
    return EvalPart(indices=arrays["indices"], targets=arrays["targets"], probs=arrays["probs"], curves=curves, x=x,
                    seconds={k: float(v) for k, v in meta["seconds"].items()}, maps=maps, errors=[],
                    hw=tuple(meta["hw"]), provider=meta["provider"], preprocess=meta["preprocess"])


__all__ = ["FOLDER", "PartStore", "fingerprint"]
