"""--targets: one class per image from a dataset's label file, in the forms datasets ship them.

The oracle for the attributions is the one-image path: each image's .npy from a folder run with --targets
equals ``explain --target K`` on that image alone.
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MODELS
from onnx_gig import ExplainOptions, explain, explain_many
from onnx_gig.errors import InputError
from onnx_gig.targets import read_targets

PHOTOS = MODELS / "images"
LABELS = (MODELS / "imagenet_classes.txt").read_text().splitlines()
STEPS = 2


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "onnx_gig.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def rows(out: Path) -> dict[str, dict]:
    with open(out / "results.csv", newline="", encoding="utf-8") as f:
        return {Path(r["image"]).name: r for r in csv.DictReader(f)}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name, text", [
    ("val.txt", "# ImageNet's val.txt\ncat.png 281\n\nsub/cup.png 968\n"),
    ("names.txt", "cat.png tabby cat\nsub/cup.png CUP\n"),                      # labels with spaces, any case
    ("spaces.txt", "cat.png 281\nsub/cup.png 968\n"),
    ("t.csv", "split,file_name,class_name\nval,cat.png,\"tabby, tabby cat\"\nval,sub/cup.png,968\n"),
    ("t.tsv", "image\tlabel\ncat.png\t281\nsub/cup.png\tcup\n"),
    ("odd_header.csv", "picture,what\ncat.png,281\nsub/cup.png,968\n"),          # a header of other names
    ("t.json", json.dumps({"cat.png": 281, "sub/cup.png": "cup"})),
    ("pairs.json", json.dumps([["cat.png", "tabby"], ["sub/cup.png", 968]])),
])
def test_the_forms_datasets_ship_their_labels_in(tmp_path, name, text):
    table = read_targets(write(tmp_path / name, text), LABELS)
    assert table.lookup(tmp_path / "cat.png") == 281
    assert table.lookup(tmp_path / "sub" / "cup.png") == 968


def test_a_byte_order_mark_and_a_name_with_spaces(tmp_path):
    f = tmp_path / "bom.txt"
    f.write_bytes("\ufeffmy photo.png 281\nother.png tiger cat\n".encode("utf-8"))
    table = read_targets(f, LABELS)
    assert table.lookup(tmp_path / "my photo.png") == 281 and table.lookup("elsewhere/other.png") == 282


def test_images_are_found_by_path_then_file_name_then_stem(tmp_path):
    table = read_targets(write(tmp_path / "t.txt", "a/x.png 1\nb/x.png 2\nILSVRC2012_val_00000001 65\n"), LABELS)
    assert table.lookup(tmp_path / "a" / "x.png") == 1 and table.lookup(tmp_path / "b" / "x.png") == 2
    assert table.lookup("/anywhere/ILSVRC2012_val_00000001.JPEG") == 65  # by stem
    assert table.lookup("/data/a/x.png") == 1  # a/x.png written relative to another folder: its folders end it
    with pytest.raises(InputError, match="no class for it in"):
        table.lookup("/data/c/x.png")  # the file names a/x.png and b/x.png, never this one
    with pytest.raises(InputError, match="no class for it in"):
        table.lookup(tmp_path / "y.png")
    both = read_targets(write(tmp_path / "u.txt", "x.png 1\nsub/x.png 2\nq/sub/x.png 3\nother/sub/x.png 4\n"), LABELS)
    assert both.lookup("/elsewhere/x.png") == 1  # only the bare name agrees
    assert both.lookup("/data/q/sub/x.png") == 3  # the entry whose folders agree furthest wins
    assert both.lookup("/elsewhere/z/sub/x.png") == 2  # sub/x.png agrees wholly, the others in part
    two = read_targets(write(tmp_path / "v.txt", "a/sub/x.png 2\nb/sub/x.png 4\n"), LABELS)
    with pytest.raises(InputError, match=r"gives 'x.png' more than one class \(2, 4\); name the image by its path"):
        two.lookup("/elsewhere/z/sub/x.png")  # both agree as far: neither is chosen


@pytest.mark.parametrize("text, match", [
    ("cat.png 1000\n", "line 1: class 1000 is out of range"),
    ("cat.png 281\ncup.png -3\n", "line 2: class -3 is out of range"),
    ("cat.png crane\n", "line 1: class 'crane' names more than one"),
    ("cat.png 281\ncup.png unicorn\n", "line 2: class 'unicorn' is neither an index nor one of the model's labels"),
    ("cat.png 281\ncup.png\n", "line 2: expected an image and a class"),
    ("", "no image and class pairs"),
])
def test_a_bad_line_is_named(tmp_path, text, match):
    with pytest.raises(InputError, match=match):
        read_targets(write(tmp_path / "t.txt", text), LABELS).check(len(LABELS))


def test_bad_files_are_one_line(tmp_path):
    with pytest.raises(InputError, match="No such file"):
        read_targets(tmp_path / "missing.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(InputError, match="not a text file"):
        read_targets(tmp_path / "bin.txt")
    with pytest.raises(InputError, match="not valid JSON"):
        read_targets(write(tmp_path / "t.json", "{cat.png: 1"))
    with pytest.raises(InputError, match="the model carries no labels"):
        read_targets(write(tmp_path / "t.txt", "cat.png tabby\n"), labels=None)


def photos(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    shutil.copy(PHOTOS / "chelsea.png", folder / "cat.png")
    shutil.copy(PHOTOS / "coffee.png", folder / "sub" / "cup.png")
    shutil.copy(PHOTOS / "camera.png", folder / "camera.png")
    return folder


def test_cli_explains_each_images_class_as_the_one_image_path_does(demo_gig, tmp_path):
    folder = photos(tmp_path / "in")
    labels = write(tmp_path / "val.txt", "in/cat.png 285\ncup.png espresso\n")  # Egyptian cat; 967
    p = run_cli("explain", demo_gig, folder, "--targets", labels, "--out-dir", tmp_path / "out", "--steps", STEPS,
                "--npy")
    assert p.returncode == 3, p.stderr
    assert "camera.png: no class for it in" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    got = rows(tmp_path / "out")
    assert (got["cat.png"]["target"], got["cup.png"]["target"], got["camera.png"]["target"]) == ("285", "967", "")
    assert got["cup.png"]["label"] == "espresso" and got["camera.png"]["error"]
    for name, image, k in (("cat", folder / "cat.png", 285), ("cup", folder / "sub" / "cup.png", 967)):
        one = explain(demo_gig, image, target=k, steps=STEPS, out=tmp_path / f"{name}_one.png", device="cpu")
        np.testing.assert_allclose(np.load(tmp_path / "out" / f"{name}.npy"), one.attributions, rtol=1e-5, atol=1e-7)
        assert one.target == k


def test_a_file_that_names_none_of_the_images_or_with_target_is_refused(demo_gig, tmp_path):
    folder = photos(tmp_path / "in")
    for extra, match in ((["--targets", write(tmp_path / "other.txt", "dog.png 1\n")], "gives none of the 3 images"),
                         (["--targets", write(tmp_path / "t.txt", "cat.png 1\n"), "--target", "2"], "give one"),
                         (["--targets", write(tmp_path / "big.txt", "cat.png 1000\n")], "out of range")):
        p = run_cli("explain", demo_gig, folder, *extra, "--out-dir", tmp_path / "out", "--steps", STEPS)
        assert p.returncode == 2 and match in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert not (tmp_path / "out").exists()


def test_resume_after_the_label_file_is_fixed_redoes_only_what_changed(demo_gig, tmp_path):
    """A file that missed an image or gave a wrong class is fixed and the run resumed: the images whose class
    changed or that now have one run; the others' figures are kept as they were (same inode and time)."""
    folder = photos(tmp_path / "in")
    labels = write(tmp_path / "val.txt", "cat.png 285\ncup.png 967\n")  # camera.png missing
    out = tmp_path / "out"
    first = run_cli("explain", demo_gig, folder, "--targets", labels, "--out-dir", out, "--steps", STEPS)
    assert first.returncode == 3 and "camera.png: no class for it" in first.stderr, first.stderr
    kept = (out / "cup_gig.png").stat()
    write(labels, "cat.png 281\ncup.png 967\ncamera.png 759\n")  # cat's class fixed, camera's added
    again = run_cli("explain", demo_gig, folder, "--targets", labels, "--out-dir", out, "--steps", STEPS, "--resume")
    assert again.returncode == 0 and "3 explained (1 of them by the earlier run)" in again.stdout, again.stderr
    assert {k: r["target"] for k, r in rows(out).items()} == {"cat.png": "281", "cup.png": "967", "camera.png": "759"}
    now = (out / "cup_gig.png").stat()
    assert (now.st_ino, now.st_mtime_ns) == (kept.st_ino, kept.st_mtime_ns)
    (tmp_path / "cf" / "281").mkdir(parents=True)
    shutil.copy(folder / "cat.png", tmp_path / "cf" / "281" / "cat.png")
    folders = run_cli("explain", demo_gig, tmp_path / "cf", "--targets", tmp_path / "cf", "--out-dir", out, "--steps",
                      STEPS, "--resume")  # class folders instead of a label file: another run
    assert folders.returncode == 2 and "other settings (targets: 'a label file' then, 'class folders of" in \
        folders.stderr, folders.stderr


def test_the_api_takes_the_file_or_a_table(demo_gig, tmp_path):
    folder = photos(tmp_path / "in")
    labels = write(tmp_path / "val.txt", "cat.png tiger cat\ncup.png 967\ncamera.png 759\n")
    by_path = [r.target for r in explain_many(demo_gig, folder, ExplainOptions(steps=STEPS, targets=labels),
                                              device="cpu")]
    table = read_targets(labels, LABELS)
    by_table = [r.target for r in explain_many(demo_gig, folder, ExplainOptions(steps=STEPS, targets=table),
                                               device="cpu")]
    assert by_path == by_table == [759, 282, 967]  # camera, cat, sub/cup: the folder's order
    with pytest.raises(InputError, match="targets is a file's path"):
        list(explain_many(demo_gig, folder, ExplainOptions(steps=STEPS, targets={"cat.png": 1}), device="cpu"))


def test_target_by_label_is_the_target_by_index(demo_gig, tmp_path):
    """--target 'tiger cat' (one of the model's labels, any case, or one of a label's comma-separated names)
    explains class 282, in one image and in a folder; a name the model lacks or shares is one line."""
    photo = PHOTOS / "chelsea.png"
    by_name = run_cli("explain", demo_gig, photo, "--target", " Tiger  Cat ", "--steps", STEPS, "--out",
                      tmp_path / "a.png", "--save-npy", tmp_path / "a.npy")
    by_index = run_cli("explain", demo_gig, photo, "--target", "282", "--steps", STEPS, "--out", tmp_path / "b.png",
                       "--save-npy", tmp_path / "b.npy")
    assert by_name.returncode == by_index.returncode == 0, by_name.stderr + by_index.stderr
    assert "explained class 282 'tiger cat'" in by_name.stdout
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    got = list(explain_many(demo_gig, [photo], ExplainOptions(steps=STEPS, target="tabby"), device="cpu"))
    assert [r.target for r in got] == [281]
    for name, match in (("unicorn", "neither an index nor one of the model's labels"),
                        ("crane", "more than one of the model's labels (134, 517)"), ("281.5", "not a whole number")):
        p = run_cli("explain", demo_gig, photo, "--target", name, "--steps", STEPS, "--out", tmp_path / "c.png")
        assert p.returncode == 2 and match in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert not (tmp_path / "c.png").exists()


def test_a_bad_first_row_is_refused_not_taken_for_a_header(tmp_path):
    """Only a first row of other names (no file in it) may be a header; a typo on line 1 is refused as on line 2."""
    for name, text, match in (("typo.txt", "camera.png reflex camra\nchelsea.png tabby\n", "line 1: class 'reflex camra'"),
                              ("typo.csv", "camera.png,reflex camra\nchelsea.png,tabby\n", "line 1: class 'reflex camra'"),
                              ("typo.json", json.dumps({"a.png": "tabbby", "b.png": 1}), "entry 1: class 'tabbby'"),
                              ("null.json", json.dumps({"a.png": None}), "entry 1: class null is neither")):
        with pytest.raises(InputError, match=match):
            read_targets(write(tmp_path / name, text), LABELS)


def test_the_form_does_not_hang_on_the_first_line(tmp_path):
    """A full label holds commas: 'name class' lines are not taken for CSV because line 1 has one."""
    lines = ["chelsea.png tabby, tabby cat", "camera.png 759", "coffee.png 967"]
    for order in (lines, lines[::-1]):
        table = read_targets(write(tmp_path / "t.txt", "\n".join(order) + "\n"), LABELS)
        assert [table.lookup(n) for n in ("chelsea.png", "camera.png", "coffee.png")] == [281, 759, 967]


def test_a_name_two_classes_give_is_refused_and_numbers_as_floats_write_them(tmp_path):
    """'missile' is class 657's full label and a name within 744's ('projectile, missile'): refused, never guessed.
    'Cardigan' as written is the dog (264, 'Cardigan, Cardigan Welsh corgi'), 'cardigan' the sweater (474), in
    any other case both. 281.0 is how a float column writes 281; digits of other scripts are not indices."""
    table = read_targets(write(tmp_path / "t.csv", "image,label\na.png,Cardigan\nb.png,281.0\nc.png,cardigan\n"), LABELS)
    assert [table.lookup(n) for n in ("a.png", "b.png", "c.png")] == [264, 281, 474]
    for name, classes in (("missile", "657, 744"), ("CARDIGAN", "264, 474"), ("partridge", "82, 86"), ("maillot", "638, 639")):
        with pytest.raises(InputError, match=f"line 2: class '{name}' names more than one of the model's labels "
                                             f"\\({classes}\\): give its index"):
            read_targets(write(tmp_path / "m.csv", f"image,label\na.png,{name}\n"), LABELS)
    with pytest.raises(InputError, match="is neither an index"):
        read_targets(write(tmp_path / "u.txt", "a.png \u0662\u0668\u0661\n"), LABELS)


def test_dotted_names_and_a_linked_label_file(tmp_path):
    table = read_targets(write(tmp_path / "l.csv", "id,label\nimg.0001,759\nimg.0002,281\n"), LABELS)
    assert table.lookup(tmp_path / "img.0001.png") == 759 and table.lookup("x/img.0002.JPEG") == 281
    (tmp_path / "ds" / "d1").mkdir(parents=True)
    (tmp_path / "ds" / "d2").mkdir()
    (tmp_path / "store").mkdir()
    write(tmp_path / "store" / "val.txt", "d1/x.png 759\nd2/x.png 281\n")
    (tmp_path / "ds" / "val.txt").symlink_to(tmp_path / "store" / "val.txt")
    linked = read_targets(tmp_path / "ds" / "val.txt", LABELS)  # paths read from the folder it is named in
    assert linked.lookup(tmp_path / "ds" / "d1" / "x.png") == 759 and linked.lookup(tmp_path / "ds" / "d2" / "x.png") == 281


def test_json_records(tmp_path):
    table = read_targets(write(tmp_path / "r.json", json.dumps([{"image": "a.png", "label": 281},
                                                                {"Image": "b.png", "Label": "tiger cat"}])), LABELS)
    assert (table.lookup("a.png"), table.lookup("b.png")) == (281, 282)
    with pytest.raises(InputError, match="entry 1: JSON targets are"):
        read_targets(write(tmp_path / "bad.json", json.dumps([{"picture": "a.png", "what": 1}])), LABELS)


def test_one_image_with_targets_is_the_one_image_path(demo_gig, tmp_path):
    """One image and --targets: explained as with --target (its figure, no tables); absent from the file, one line."""
    labels = write(tmp_path / "val.txt", "chelsea.png 285\n")
    p = run_cli("explain", demo_gig, PHOTOS / "chelsea.png", "--targets", labels, "--steps", STEPS, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "explained class 285 'Egyptian cat'" in p.stdout
    assert (tmp_path / "chelsea_gig.png").is_file() and not (tmp_path / "results.csv").exists()
    q = run_cli("explain", demo_gig, PHOTOS / "coffee.png", "--targets", labels, "--steps", STEPS, cwd=tmp_path)
    assert q.returncode == 2 and "coffee.png: no class for it in" in q.stderr, q.stderr
    assert not (tmp_path / "coffee_gig.png").exists()


def test_class_folders_the_imagefolder_layout(demo_gig, tmp_path):
    """--targets DATASET_FOLDER: each image's class is the folder directly below it that holds it, named by a
    label or an index; a misspelt or out-of-range class folder is refused before anything runs."""
    root = tmp_path / "val"
    for folder, photo in (("tabby", "chelsea"), ("282", "chelsea"), ("Egyptian cat", "chelsea"), ("espresso", "coffee")):
        (root / folder / "deeper").mkdir(parents=True)
        shutil.copy(PHOTOS / f"{photo}.png", root / folder / "deeper" / f"{folder.replace(' ', '_')}.png")
    (root / ".cache").mkdir()  # hidden: not a class folder
    shutil.copy(PHOTOS / "camera.png", root / "loose.png")
    table = read_targets(root, LABELS)
    assert table.lookup(root / "tabby" / "deeper" / "tabby.png") == 281
    assert table.lookup(root / "Egyptian cat" / "x.png") == 285 and table.lookup(root / "282" / "x.png") == 282
    with pytest.raises(InputError, match="not in one of the class folders"):
        table.lookup(root / "loose.png")
    p = run_cli("explain", demo_gig, root, "--targets", root, "--out-dir", tmp_path / "out", "--steps", STEPS, "--npy")
    assert p.returncode == 3 and "loose.png: not in one of the class folders" in p.stderr, p.stderr
    got = rows(tmp_path / "out")
    assert {n: r["target"] for n, r in got.items()} == {"tabby.png": "281", "282.png": "282", "Egyptian_cat.png": "285",
                                                         "espresso.png": "967", "loose.png": ""}
    one = explain(demo_gig, root / "282" / "deeper" / "282.png", target=282, steps=STEPS, out=tmp_path / "one.png",
                  device="cpu")
    np.testing.assert_allclose(np.load(tmp_path / "out" / "282.npy"), one.attributions, rtol=1e-5, atol=1e-7)
    (root / "tabbby").mkdir()  # a misspelt class: its images fail, each naming it; the others run
    shutil.copy(PHOTOS / "chelsea.png", root / "tabbby" / "typo.png")
    q = run_cli("explain", demo_gig, root, "--targets", root, "--out-dir", root / "out", "--steps", STEPS)
    assert q.returncode == 3, q.stderr
    assert "typo.png: its folder 'tabbby' in" in q.stderr and "names no class: class 'tabbby' is neither" in q.stderr
    again = run_cli("explain", demo_gig, root, "--targets", root, "--out-dir", root / "out", "--steps", STEPS,
                    "--resume")  # its own --out-dir inside the dataset is no class folder, and no input
    assert again.returncode == 3 and "4 explained (4 of them by the earlier run), 2 failed" in again.stdout, \
        again.stderr
    (root / "tabbby").rename(root / "tabby2")  # fixing the folder it named: --resume goes on (new inputs)
    (root / "tabby2" / "typo.png").rename(root / "tabby" / "typo.png")
    (root / "tabby2").rmdir()
    fixed = run_cli("explain", demo_gig, root, "--targets", root, "--out-dir", root / "out", "--steps", STEPS,
                    "--resume")
    assert fixed.returncode == 3 and "5 explained (4 of them by the earlier run), 1 failed" in fixed.stdout, fixed.stderr
    (root / "tabby" / "typo.png").unlink()
    shutil.rmtree(root / "out")
    with pytest.raises(InputError, match="no class folders in it"):
        (tmp_path / "empty" / "dogs").mkdir(parents=True)
        read_targets(tmp_path / "empty", LABELS)
    (root / "1000").mkdir()  # a class the model lacks: its images fail as a misspelt folder's do
    table = read_targets(root, LABELS)
    table.check(len(LABELS))
    with pytest.raises(InputError, match="its folder '1000' in .* names no class: class 1000 is out of range"):
        table.lookup(root / "1000" / "x.png")


def test_class_folders_through_a_link(tmp_path):
    """A dataset reached through a symlink: images named through the link (one process) or resolved (Ray's rows)."""
    real = tmp_path / "real"
    (real / "tabby").mkdir(parents=True)
    shutil.copy(PHOTOS / "chelsea.png", real / "tabby" / "a.png")
    (tmp_path / "link").symlink_to(real)
    table = read_targets(tmp_path / "link", LABELS)
    assert table.lookup(tmp_path / "link" / "tabby" / "a.png") == 281
    assert table.lookup((tmp_path / "link" / "tabby" / "a.png").resolve()) == 281


def test_a_result_writer_takes_a_class_folder_by_path(demo_gig, tmp_path):
    """The run's fingerprint names class folders by their root (a folder is not hashed as a file)."""
    from onnx_gig.writer import ResultWriter

    (tmp_path / "val" / "tabby").mkdir(parents=True)
    with ResultWriter(tmp_path / "out", options=ExplainOptions(targets=str(tmp_path / "val")), model=demo_gig) as w:
        assert w.record.header["targets"] == f"class folders of {(tmp_path / 'val').resolve()}"


@pytest.mark.parametrize("name, text", [
    ("isic.csv", "image_name,patient_id,target\ncat,IP_1,281\ncup,IP_2,968\n"),  # only the class column is known
    ("flip.csv", "label,fname\n281,cat.png\n968,cup.png\n"),                     # the class first, the image unnamed
    ("img.csv", "file_name,what\ncat.png,281\ncup.png,968\n"),                   # only the image column, of two
    ("dtab.txt", "cat.png\t\t281\ncup.png\t\t968\n"),                            # two tabs between the fields
    ("metadata.jsonl", '{"file_name": "cat.png", "label": 281}\n{"file_name": "cup.png", "label": "cup"}\n'),
    ("meta.txt", '{"file_name": "cat.png", "label": 281}\n{"file_name": "cup.png", "label": 968}\n'),
    ("brackets.txt", "[a].png 3\ncat.png 281\ncup.png 968\n"),                   # text that starts like JSON
])
def test_more_forms_datasets_ship(tmp_path, name, text):
    table = read_targets(write(tmp_path / name, text), LABELS)
    assert table.lookup(tmp_path / "cat.png") == 281 and table.lookup(tmp_path / "cup.png") == 968


@pytest.mark.parametrize("name, text, match", [
    ("typo1.txt", "camera tabbby\nchelsea 282\n", r"line 1: class 'tabbby' is neither"),  # no header in name-class lines
    ("nan.json", '{"cat.png": NaN}', r"entry 1: class nan is not a whole number"),
    ("inf.json", '{"cat.png": Infinity}', r"entry 1: class inf is not a whole number"),
    ("nul.txt", "cat\0.png 281\n", r"line 1: the image name holds a NUL byte"),
    ("three.csv", "file_name,a,b\ncat.png,1,2\n", r"line 1: the header names the image column \('file_name'\) but no "
                                                  r"class column of 3; name it one of target, label"),
    ("bad.jsonl", '{"file_name": "cat.png", "label": 281}\n{"file_name": \n', r"line 2: not valid JSON"),
])
def test_more_bad_files_are_one_line_naming_where(tmp_path, name, text, match):
    with pytest.raises(InputError, match=match):
        read_targets(write(tmp_path / name, text), LABELS)


def test_the_label_file_is_never_an_output_and_options_are_never_abbreviated(demo_gig, tmp_path):
    labels = write(tmp_path / "val.txt", "chelsea.png 281\n")
    before = labels.read_bytes()
    for flag in ("--out", "--save-npy"):
        p = run_cli("explain", demo_gig, PHOTOS / "chelsea.png", "--targets", labels, flag, labels, "--force",
                    "--steps", STEPS)
        assert p.returncode == 2 and "refusing to overwrite the input file" in p.stderr, p.stderr
    (tmp_path / "ev").mkdir()
    results = write(tmp_path / "ev" / "results.csv", "image,label\nchelsea.png,281\n")  # kept beside the results
    kept = results.read_bytes()
    e = run_cli("eval", MODELS / "mobilenet_v2.onnx", PHOTOS / "chelsea.png", "--methods", "random", "--targets",
                results, "--out-dir", tmp_path / "ev")
    assert e.returncode == 2 and "refusing to overwrite the input file" in e.stderr and "note:" not in e.stderr, e.stderr
    from onnx_gig.evaluate import evaluate

    with pytest.raises(InputError, match="refusing to overwrite the input file"):  # a table read from it, too
        evaluate(MODELS / "mobilenet_v2.onnx", [PHOTOS / "chelsea.png"], "random", tmp_path / "ev",
                 targets=read_targets(results, LABELS))
    assert labels.read_bytes() == before and results.read_bytes() == kept
    a = run_cli("eval", MODELS / "mobilenet_v2.onnx", PHOTOS / "chelsea.png", "--target", "281")  # not --targets
    assert a.returncode == 2 and "unrecognized arguments: --target 281" in a.stderr, a.stderr


def test_paths_written_elsewhere_and_through_links(tmp_path):
    """A label file written on another machine, from another folder, or for a copy under another root still
    finds its images by their own folder; a link to a folder is read through."""
    (tmp_path / "ds" / "a").mkdir(parents=True)
    (tmp_path / "ds" / "a" / "x.png").write_bytes(b"")
    (tmp_path / "lnk").symlink_to(tmp_path / "ds" / "a")
    for text in ("/home/alice/data/a/x.png 281\n", "C:\\data\\a\\x.png 281\n", "../../elsewhere/ds/a/x.png 281\n",
                 "val/a/x.png 281\n"):
        table = read_targets(write(tmp_path / "lab.txt", text + "b/x.png 282\n"), LABELS)
        assert table.lookup(tmp_path / "ds" / "a" / "x.png") == 281, text
        assert table.lookup(tmp_path / "lnk" / "x.png") == 281, text  # its real folder is a/
        with pytest.raises(InputError, match="no class for it"):
            table.lookup(tmp_path / "ds" / "c" / "x.png")


@pytest.mark.parametrize("name, text", [
    ("one.jsonl", '{"file_name": "cat.png", "label": 281}\n'),  # one line of JSON Lines
    ("rec.json", '{"file_name": "cat.png", "label": 281}'),      # one record, not {image: class}
    ("h2.csv", "file,281\ncat.png,281\n"),                       # a first row that is data, not a header
])
def test_one_record_and_a_first_row_of_data(tmp_path, name, text):
    table = read_targets(write(tmp_path / name, text), LABELS)
    assert table.lookup(tmp_path / "cat.png") == 281
    if name == "h2.csv":
        assert table.lookup(tmp_path / "file") == 281


@pytest.mark.parametrize("name, text, match", [
    ("null.json", '[[null, 281]]', r"entry 1: the image is null, not a file name"),
    ("nulrec.json", '[{"image": null, "label": 281}]', r"entry 1: the image is null"),
    ("broken.txt", '{"cat.png": 281,\n}', r"not valid JSON"),
])
def test_json_that_names_no_image_or_does_not_parse(tmp_path, name, text, match):
    with pytest.raises(InputError, match=match):
        read_targets(write(tmp_path / name, text), LABELS)

