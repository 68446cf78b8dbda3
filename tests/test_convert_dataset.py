"""tools/convert_dataset.py and instseg_d2.data.convert: registered data written in each format
with a dataset file that loads back with the same instances per class; the example script."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from detectron2.data import DatasetCatalog

import instseg_d2.data  # noqa: F401  (registers the datasets)
from instseg_d2.data import convert as convert_module
from instseg_d2.data.convert import SourceSplits, convert, split_of_name
from instseg_d2.data.dataset_file import FORMATS, load_dataset_file, read_dataset_file
from instseg_d2.data.export import dicts_to_coco, write_json
from instseg_d2.data.writers import DatasetWriteError
from instseg_d2.utils.cli import run_tool
from instseg_d2.utils.errors import UserError

REPO = Path(__file__).resolve().parents[1]
SCREEN_LINES = 45


def _script(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _instances_per_class(dicts: list[dict], classes: list[str]) -> Counter:
    return Counter(classes[a["category_id"]] for r in dicts for a in r["annotations"])


def _counts(dataset_file: Path) -> tuple[list[str], dict[str, tuple[int, Counter]]]:
    splits, classes, _ = load_dataset_file(read_dataset_file(dataset_file))
    return classes, {
        split: (len(data.dicts), _instances_per_class(data.dicts, classes))
        for split, data in splits.items()
    }


@pytest.fixture(scope="module")
def source_file(tmp_path_factory, shared_data) -> Path:
    """A 2-class COCO dataset file (ids 7 and 3: COCO orders balloon first): train 2 pedestrian
    + 2 balloon images, val 1 + 1."""
    folder = tmp_path_factory.mktemp("source")
    for split, n in (("train", 2), ("val", 1)):
        balloons = [
            {**r, "annotations": [{**a, "category_id": 1} for a in r["annotations"]]}
            for r in DatasetCatalog.get(f"balloon_{split}_mini")[:n]
        ]
        dicts = DatasetCatalog.get(f"pennfudan_{split}_mini")[:n] + balloons
        write_json(
            dicts_to_coco(dicts, ["pedestrian", "balloon"], [7, 3]), folder / f"{split}.json"
        )
    (folder / "data.yaml").write_text("name: src\nformat: coco\ntrain: train.json\nval: val.json\n")
    return folder / "data.yaml"


def test_split_of_name():
    assert split_of_name("balloon_train_mini") == "train"
    assert split_of_name("pennfudan_fold0of5_val") == "val"
    assert split_of_name("my_val_data_test") == "test"
    assert split_of_name("mydata") == "train"
    assert split_of_name("interval") == "train"  # a split word, not a part of one


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_loads_back_with_the_same_instances_per_class(
    source_file, tmp_path, capsys, fmt
):
    output = tmp_path / fmt
    tool = _script("tools/convert_dataset.py")
    assert (
        tool.main(["--dataset-file", str(source_file), "--to", fmt, "--output", str(output)]) == 0
    )
    printed = capsys.readouterr().out
    assert f"read back through the {fmt} reader" in printed
    assert f"INSTSEG.DATASET_FILE {output / 'data.yaml'}" in printed
    classes, expected = _counts(source_file)
    assert classes == ["balloon", "pedestrian"]
    got_classes, got = _counts(output / "data.yaml")
    assert got_classes == classes and got == expected
    assert read_dataset_file(output / "data.yaml").name == fmt  # the folder's name
    if fmt in ("yolo", "via"):  # pedestrians are RLE: one polygon each, the same pixels
        assert "masks (RLE) written as one polygon each" in printed
        assert "min 1.000" in printed
    if fmt in ("coco", "labelme"):
        assert f"nothing lost or changed: {fmt} holds every instance as it was" in printed


def test_datasets_of_one_split_merge_by_class_name(shared_data, tmp_path, capsys):
    tool = _script("tools/convert_dataset.py")
    output = tmp_path / "merged"
    args = ["--dataset", "train=pennfudan_val_mini", "train=balloon_val_mini", "--to", "labelme"]
    assert tool.main([*args, "--output", str(output), "--name", "merged"]) == 0
    spec = read_dataset_file(output / "data.yaml")
    assert spec.name == "merged" and spec.classes == ["pedestrian", "balloon"]
    (tmp_path / "made_by_hand").mkdir()  # the output folder has the usual permissions
    assert output.stat().st_mode == (tmp_path / "made_by_hand").stat().st_mode
    assert list(spec.splits) == ["train"]  # val is held out of train when it is loaded
    assert "| train   |       10 |          0 |          29 |           10 |        19 |" in (
        capsys.readouterr().out
    )
    # Only a val split: no dataset file can be written.
    with pytest.raises(UserError, match=r"no training split among pennfudan_val_mini \(val\);"):
        tool.main(
            ["--dataset", "pennfudan_val_mini", "--to", "coco", "--output", str(tmp_path / "v")]
        )
    with pytest.raises(UserError, match=r"'valid' is not a split \(train, val, test\)"):
        tool.main(["--dataset", "valid=pennfudan_val_mini", "--to", "coco", "--output", "x"])


def test_output_must_be_new_and_errors_are_one_line(source_file, tmp_path, capsys):
    tool = _script("tools/convert_dataset.py")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    argv = ["--dataset-file", str(source_file), "--to", "yolo", "--output", str(tmp_path / "used")]
    assert run_tool(tool.main, argv) == 1
    assert (
        capsys.readouterr().err
        == f"error: {tmp_path / 'used'}: already exists; give a new or empty folder\n"
    )
    assert (tmp_path / "used" / "keep.txt").read_text() == "mine"


def test_help_fits_on_a_screen():
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "convert_dataset.py"), "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and "--output" in proc.stdout and "--to" in proc.stdout
    assert len(proc.stdout.splitlines()) <= SCREEN_LINES
    assert "Warning" not in proc.stderr, proc.stderr


def _tiny_source(tmp_path) -> SourceSplits:
    from PIL import Image

    image = tmp_path / "im.png"
    Image.new("RGB", (8, 6)).save(image)
    ann = {
        "bbox": [1, 1, 5, 4],
        "bbox_mode": 0,
        "segmentation": [[1, 1, 5, 1, 5, 4]],
        "category_id": 0,
        "iscrowd": 0,
    }
    record = {"file_name": str(image), "height": 6, "width": 8, "image_id": 1, "annotations": [ann]}
    return SourceSplits({"train": [record]}, ["thing"], [1], {"train": ["tiny"]})


def test_what_the_reader_does_not_read_back_is_an_error(tmp_path, monkeypatch):
    real_writer = convert_module.write_labelme

    def losing_writer(dicts, classes, folder, copy_images=False):
        written = real_writer(dicts, classes, folder, copy_images)
        for json_file in Path(folder).glob("*.json"):  # a writer that loses the instance
            doc = json.loads(json_file.read_text())
            json_file.write_text(json.dumps({**doc, "shapes": []}))
        return written

    monkeypatch.setattr(convert_module, "write_labelme", losing_writer)
    with pytest.raises(DatasetWriteError, match="does not read back what was written"):
        convert(_tiny_source(tmp_path), "labelme", tmp_path / "out", name="tiny")


def test_a_failed_conversion_leaves_no_output(tmp_path):
    source = _tiny_source(tmp_path)
    source.splits["train"][0]["annotations"][0]["segmentation"] = []
    with pytest.raises(DatasetWriteError, match="annotation 0 has no segmentation"):
        convert(source, "yolo", tmp_path / "out", name="tiny")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["im.png"]  # no output, no .partial


def test_two_class_example_writes_three_dataset_files_with_two_classes(shared_data, tmp_path):
    script = _script("datasets/make_two_class_example.py")
    assert script.main(["--output", str(tmp_path)]) == 0
    for fmt in ("coco", "labelme", "yolo"):
        classes, counts = _counts(tmp_path / fmt / "data.yaml")
        assert classes == ["pedestrian", "balloon"], fmt
        assert counts == {
            "train": (20, Counter(pedestrian=15, balloon=58)),
            "val": (10, Counter(pedestrian=10, balloon=19)),
        }, fmt
    with pytest.raises(UserError, match="coco: already exists; --force replaces it"):
        script.main(["--output", str(tmp_path)])
