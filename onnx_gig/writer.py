"""Write many images' results into one folder: a figure (and .npy) per image, results.csv, results.jsonl and
the page that shows them all (results.html, gallery.py).

Every file is written atomically; the tables are written at ``close`` (rows ordered by input index), so an
interrupted run leaves complete figures and no half-written table. Results may arrive more than once or
out of order (a distributed run retries): each index is written once. Given the model, the writer keeps
the run record (journal.py) that lets ``resume`` finish an interrupted run.
"""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np

from .batch import ExplainOptions, ImageResult, Inputs
from .errors import InputError
from .fileio import Protected, atomic_path, check_output, uninterrupted
from .gallery import PAGE, render_page
from .heatmap import render_figure, save_png, saliency_map
from .journal import RECORD, RunRecord, fingerprint, input_key, is_done
from .targets import ClassFolders, Targets

TABLES = ("results.csv", "results.jsonl")
OUTPUTS = TABLES + (PAGE,)  # what close writes: the tables and the page that shows them (gallery.py)


def draw_figure(result: ImageResult, o: ExplainOptions):
    """The figure (photo | map | overlay) of one result as the options ask; Ray actors draw with it too."""
    from .api import figure_title

    m = saliency_map(result.attributions, result.layout, o.clip_percentile, o.sign)
    title = figure_title(result.label or "", result.probability or 0.0, result.method or "", o.steps, o.rule,
                         o.baseline, o.clip_percentile)
    return render_figure(result.photo, m, title, o.cmap, o.sign, o.alpha)


class ResultWriter:
    """Figures ``DIR/<stem>_gig.png``, raw ``DIR/<stem>.npy`` (with ``npy``) and the two tables.

    Stems are kept unique (``a/cat.png``, ``b/cat.png`` -> ``cat_gig.png``, ``cat-2_gig.png``) in input
    order: give ``inputs`` (the input paths by index) to fix every name before any work and to refuse
    existing outputs up front (unless ``overwrite``); without it names are given in arrival order.

    Given ``model`` (the converted model's path), it also keeps the run record ``DIR/.onnx-gig-run.jsonl``;
    with ``resume`` an earlier run's record is read first: the inputs it explained (and whose files are still
    there) keep their names and rows and are ``done``; only the others need explaining (see ``pending``).
    """

    def __init__(self, out_dir: str | os.PathLike, *, figures: bool = True, npy: bool = False,
                 overwrite: bool = False, options: Optional[ExplainOptions] = None,
                 inputs: Optional[Sequence[str | os.PathLike]] = None,
                 protect: Iterable[str | os.PathLike] = (), model: str | os.PathLike | None = None,
                 resume: bool = False) -> None:
        self.dir = Path(out_dir)
        if self.dir.exists() and not self.dir.is_dir():
            raise InputError(f"--out-dir {self.dir} is a file; give a folder")
        if resume and overwrite:
            raise InputError("--resume keeps what an earlier run wrote and --force writes it again; give one of them")
        if resume and model is None:
            raise InputError("resuming needs the model: the run record checks that the same model and options "
                             "made the earlier outputs")
        self.figures, self.npy, self.overwrite = figures, npy, overwrite
        self._model_name = Path(model).name if model is not None else None
        self.options = options or ExplainOptions()
        self._protect = Protected([Path(p) for p in protect] + [Path(p) for p in (inputs or ())])
        self._taken = {os.path.normcase(os.path.realpath(p)) for p in self._protect}
        self._names: dict[int, str] = {}
        self._used: set[str] = set()
        self._next: dict[str, int] = {}  # stem -> the first number its next image may try
        self._rows: dict[int, dict] = {}
        self._done: set[int] = set()
        self._todo: Optional[tuple[list[int], int]] = None
        self.failures: list[tuple[str, str]] = []
        self.closed = False
        self.record = None if model is None else RunRecord(self.dir, fingerprint(model, self.options, figures=figures,
                                                                                 npy=npy))
        self._appending = bool(resume and self.record is not None and self.record.exists())
        earlier = self._earlier_run(resume)
        classes = self._classes(model) if earlier else None
        # a resumed run may replace files the record does not vouch for (an image cut off mid-write)
        self._replace = overwrite or self._appending
        for name in OUTPUTS:
            check_output(self.dir / name, self._protect, self._replace)
        for i, p in enumerate(inputs or ()):
            entry = earlier.get(input_key(p))
            if entry is not None:  # an input the record names keeps its name, done or to be redone
                self._names[i] = entry["stem"]
                if is_done(entry, self.dir) and self._same_class(classes, entry, p):
                    self._rows[i] = {**entry["row"], "image": str(p)}
                    self._done.add(i)
        for i, p in enumerate(inputs or ()):
            if i not in self._done:
                self._check_free(self._name(i, str(p)))
        # images of the earlier run that this one was not given stay in the tables (after this run's inputs):
        # the tables describe every image explained into the folder, as the record does
        given = {input_key(p) for p in (inputs or ())}
        self._carried = [entry["row"] for key, entry in earlier.items()
                         if inputs is not None and key not in given and is_done(entry, self.dir)]

    def _earlier_run(self, resume: bool) -> dict[str, dict]:
        """The record's entries when resuming (their stems reserved), after refusing a record in the way."""
        if self.record is None or not self.record.exists():
            return {}
        if not resume:
            if not self.overwrite:
                raise InputError(f"{self.dir} holds an earlier run (its record {RECORD}): --resume finishes it or "
                                 "adds new images, --force starts over")
            return {}
        entries = self.record.read()
        for entry in entries.values():  # every recorded name is its input's: no other input takes it
            self._used.add(entry["stem"].casefold())
        return entries

    def _classes(self, model) -> Optional[Targets]:
        """The run's label table, read if given by path (None without one, or with class folders: a folder's
        class is its path's, and a path changed is a new input)."""
        t = self.options.targets
        if t is None or model is None:
            return None
        if not isinstance(t, Targets):
            from .batch import with_classes

            t = with_classes(self.options, model).targets
        return None if isinstance(t, ClassFolders) else t

    @staticmethod
    def _same_class(classes: Optional[Targets], entry: dict, path) -> bool:
        """Whether the label file still gives a recorded image the class it was explained for."""
        if classes is None:
            return True
        try:
            return classes.lookup(path) == entry["row"].get("target")
        except InputError:
            return False

    @property
    def resumed(self) -> int:
        """Inputs an earlier run had explained (files still there), taken over without running again."""
        return len(self._done)

    def done(self, index: int) -> bool:
        """Whether input ``index`` needs no more work (resumed from the record, or written by this run)."""
        return index in self._rows

    def pending(self, inputs: Inputs) -> tuple[Inputs, list[int]]:
        """What is left to explain of ``inputs`` (everything unless resuming), and each left file's own index.

        Unmatched arguments are always left: their rows say why. ``reindex`` maps a result of the returned
        listing back to its index in ``inputs``."""
        files, missing = inputs
        todo = [i for i in range(len(files)) if not self.done(i)]
        self._todo = (todo, len(files))
        return Inputs([files[i] for i in todo], list(missing)), todo

    def reindex(self, result: ImageResult) -> ImageResult:
        """A result of ``pending``'s listing, numbered as in the full one."""
        if self._todo is None:
            raise InputError("reindex() maps the results of pending()'s listing: call pending() first")
        todo, n = self._todo
        result.index = todo[result.index] if result.index < len(todo) else n + result.index - len(todo)
        return result

    # -- names ---------------------------------------------------------------------------------
    def _name(self, index: int, path: str) -> str:
        """The unique stem of input ``index`` (first come, first served; ``stem-2``, ``stem-3``... after)."""
        if index not in self._names:
            stem = Path(path).stem or "image"
            n = self._next.get(stem.casefold(), 1)  # where the last search for this stem stopped: thousands of
            while True:                             # image.png in their own folders are not quadratic
                cand = stem if n == 1 else f"{stem}-{n}"
                if cand.casefold() not in self._used and not any(
                        os.path.normcase(os.path.realpath(f)) in self._taken for f in self._files(cand)):
                    break
                n += 1
            self._next[stem.casefold()] = n + 1
            self._used.add(cand.casefold())
            self._names[index] = cand
        return self._names[index]

    def _files(self, stem: str) -> list[Path]:
        return [self.dir / name for name, on in ((f"{stem}_gig.png", self.figures), (f"{stem}.npy", self.npy)) if on]

    def _check_free(self, stem: str) -> None:
        for f in self._files(stem):
            check_output(f, self._protect, self._replace)

    # -- writing -------------------------------------------------------------------------------
    def write(self, result: ImageResult) -> bool:
        """Write one result's files and keep its row; False (and nothing written) if its index was written."""
        if self.closed:
            raise InputError("this ResultWriter is closed")
        if result.index in self._rows:
            return False
        stem = self._name(result.index, result.path)
        with uninterrupted():  # Ctrl-C lands after the record line: no figure on disk goes unrecorded
            figure = npy = None
            if result.ok and result.attributions is not None:
                self._check_free(stem)
                if self.npy:
                    npy = self.dir / f"{stem}.npy"
                    with atomic_path(npy, protect=self._protect) as tmp:
                        with open(tmp, "wb") as f:
                            np.save(f, np.asarray(result.attributions, np.float32))
                if self.figures:
                    figure = self.dir / f"{stem}_gig.png"
                    save_png(self.figure(result), figure, protect=self._protect)
            else:
                self.failures.append((result.path, result.error or "no attributions"))
            row = result.row(self.options.top)
            row["figure"] = figure.name if figure else None
            row["npy"] = npy.name if npy else None
            self._rows[result.index] = row
            if self.record is not None:  # after the files: a recorded image is a complete one
                if self.record.closed:
                    self.record.start(append=self._appending)
                self.record.add(result.path, stem, row)
        return True

    def figure(self, result: ImageResult):
        """The figure of one result, drawn with the writer's options."""
        return draw_figure(result, self.options)

    @property
    def written(self) -> int:
        """Results written so far (failed ones included)."""
        return len(self._rows)

    @property
    def explained(self) -> int:
        return len(self._rows) - len(self.failures)

    def rows(self) -> list[dict]:
        """The table rows ordered by input index, then those of a resumed run's images not given this time."""
        return [self._rows[i] for i in sorted(self._rows)] + self._carried

    def close(self) -> list[Path]:
        """Write results.csv, results.jsonl and results.html (each complete or absent); return their paths.

        The run record stays: a later ``resume`` adds images that appeared since without redoing these."""
        if self.closed:
            return [self.dir / n for n in OUTPUTS]
        if self.record is not None:
            self.record.close()
        rows = self.rows()
        cols = list(rows[0]) if rows else list(ImageResult(0, "").row(self.options.top)) + ["figure", "npy"]
        text = io.StringIO(newline="")
        w = csv.DictWriter(text, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if v is None else v for k, v in r.items()})
        out = []
        for name, body in (("results.csv", text.getvalue()),
                           ("results.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)),
                           (PAGE, render_page(rows, self.page_title(), self.page_subtitle()))):
            out.append(self.dir / name)
            with atomic_path(out[-1], protect=self._protect) as tmp:
                tmp.write_text(body, encoding="utf-8", errors="backslashreplace")  # names that are not UTF-8
        self.closed = True
        return out

    def page_title(self) -> str:
        """The page's heading: what was explained, with which model."""
        return f"onnx-gig: {self._model_name or 'attributions'}"

    def page_subtitle(self) -> str:
        """The options that shaped the maps, as the figures' titles give them."""
        o = self.options
        if isinstance(o.targets, Targets):
            target = o.targets.said()
        elif o.targets is not None:  # a path not read yet (the Python API)
            target = f"classes from {os.path.basename(os.fspath(o.targets))}"
        else:
            target = f"class {o.target}" if o.target is not None else "the predicted class"
        return (f"{target}; {o.steps} steps ({o.rule}), baseline {o.baseline}; map: {o.sign}, clipped at the "
                f"{o.clip_percentile:g}th percentile")

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """Tables only when the run completed: an interrupted or failed run leaves no partial table."""
        if exc_type is None:
            self.close()
        else:
            self.closed = True
            if self.record is not None:
                self.record.close()


__all__ = ["OUTPUTS", "ResultWriter", "TABLES", "draw_figure"]
