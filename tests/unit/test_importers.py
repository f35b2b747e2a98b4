"""Importers on real sample images (tests/data), boxes checked against the masks; bad input."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model import datasets
from model.cli import main as birads
from model.datasets.export import write_dataset
from model.io import DataError, image_size, read_image


def _mask_box(path: Path) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(np.asarray(Image.open(path).convert("L")) > 127)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def test_busbra_boxes_match_masks_and_keep_folds(busbra_dir):
    records = datasets.load(f"busbra:{busbra_dir}")
    assert len(records) == 8
    for record in records:
        mask = busbra_dir / "Masks" / f"{record.image_id.replace('bus_', 'mask_')}.png"
        assert len(record.boxes) == 1
        box = record.boxes[0]
        assert (box.x0, box.y0, box.x1, box.y1) == _mask_box(mask)
        assert box.category == record.birads
        assert record.split in {"fold1", "fold2", "fold3", "fold4"}
        assert (record.width, record.height) == Image.open(record.path).size
        assert record.masks == [str(mask.resolve())]  # the outline the box came from
    by_id = {r.image_id: r for r in records}
    assert by_id["bus_0084-r"].birads == "5" and by_id["bus_0084-r"].pathology == "malignant"
    assert by_id["bus_0224-r"].split == "fold1" and by_id["bus_0859-l"].split == "fold3"
    assert sorted({r.birads for r in records}) == ["2", "3", "4", "5"]


def test_breast_tumor_masks_only_subcategories_and_normal_images(breast_dir):
    records = {r.image_id: r for r in datasets.load(f"breast:{breast_dir}")}
    assert set(records) == {"breast-case008", "breast-case045", "breast-case092", "breast-case151"}
    normal = records["breast-case045"]
    assert normal.boxes == [] and normal.birads == "1" and normal.pathology == "normal"
    with_other = records["breast-case092"]  # has an "other" finding mask, not used as a box
    assert with_other.birads == "4B"
    assert [(b.x0, b.y0, b.x1, b.y1) for b in with_other.boxes] == \
        [_mask_box(breast_dir / "images_and_masks" / "case092_tumor.png")]
    assert records["breast-case151"].boxes[0].category == "4A"
    assert normal.masks == [] and [Path(m).name for m in with_other.masks] == ["case092_tumor.png"]
    assert all(r.split == "part1" for r in records.values())  # each the first of its category
    assert read_image(with_other.path).shape == (with_other.height, with_other.width, 3)  # RGBA in


def test_subset_of_images_imports_just_those(tmp_path, busbra_dir):
    subset = tmp_path / "busbra"
    shutil.copytree(busbra_dir, subset)
    (subset / "Images" / "bus_0084-r.png").unlink()
    records = datasets.load(f"busbra:{subset}")
    assert len(records) == 7 and "bus_0084-r" not in {r.image_id for r in records}


def test_export_round_trips_through_coco_and_labelstudio(tmp_path, busbra_dir, breast_dir):
    records = datasets.load(f"busbra:{busbra_dir}") + datasets.load(f"breast:{breast_dir}")
    facts = write_dataset(records, tmp_path / "out")
    assert facts["images"] == 12 and facts["boxes"] == 11
    coco = datasets.load(f"coco:{tmp_path / 'out' / 'coco.json'}")
    studio = datasets.load(f"labelstudio:{tmp_path / 'out' / 'labelstudio.json'}")
    ours = datasets.load(f"records:{tmp_path / 'out' / 'records.json'}")
    coco_json = json.loads((tmp_path / "out" / "coco.json").read_text())
    # Mixed plain 4 (BUS-BRA) and 4A/4B (BrEaST): COCO categories use the coarse set.
    assert [c["name"] for c in coco_json["categories"]] == ["2", "3", "4", "5"]
    for original, c, s, o in zip(records, coco, studio, ours):
        assert o == original
        assert c.path == s.path == original.path
        for mine, theirs in ((c.boxes, original.boxes), (s.boxes, original.boxes)):
            assert len(mine) == len(theirs)
            for a, b in zip(mine, theirs):
                assert a.iou(b) > 0.999
        assert c.patient == original.patient and c.split == original.split
        # our own Label Studio export comes back with its patients, splits and pathology too
        assert (s.image_id, s.patient, s.split, s.pathology) == (original.image_id, original.patient,
                                                                 original.split, original.pathology)


def test_labelstudio_tasks_as_predictions_with_local_files_urls(tmp_path, busbra_dir):
    records = datasets.load(f"busbra:{busbra_dir}")
    write_dataset(records, tmp_path / "out", as_predictions=True, document_root=busbra_dir.parent)
    tasks = json.loads((tmp_path / "out" / "labelstudio.json").read_text())
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=busbra/Images/bus_0859-l.png"
    assert "annotations" not in tasks[0] and tasks[0]["predictions"][0]["result"]
    region = tasks[0]["predictions"][0]["result"][0]
    assert region["value"]["rectanglelabels"] == ["BI-RADS 2"] and region["type"] == "rectanglelabels"
    assert region["original_width"] == records[0].width


def test_labelstudio_export_respects_exif_orientation(tmp_path):
    # A 200x100 sensor image stored with EXIF "rotate 90 CW": displayed as 100 wide, 200 high.
    pixels = np.zeros((100, 200, 3), np.uint8)
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "scan.jpg", exif=exif)
    assert image_size(tmp_path / "scan.jpg") == (100, 200)
    assert read_image(tmp_path / "scan.jpg").shape == (200, 100, 3)
    export = [{"id": 7, "data": {"image": "/data/local-files/?d=scan.jpg"}, "annotations": [
        {"was_cancelled": False, "result": [{"type": "rectanglelabels", "value": {
            "x": 10, "y": 25, "width": 50, "height": 50, "rectanglelabels": ["BI-RADS 4A"]}}]}]}]
    (tmp_path / "export.json").write_text(json.dumps(export))
    [record] = datasets.load(f"labelstudio:{tmp_path / 'export.json'}", image_root=tmp_path)
    box = record.boxes[0]
    assert (record.width, record.height) == (100, 200)
    assert (box.x0, box.y0, box.x1, box.y1, box.category) == (10, 50, 60, 150, "4A")


def test_labelstudio_skips_cancelled_and_unlabelled_tasks(tmp_path, busbra_dir):
    image = str(busbra_dir / "Images" / "bus_0859-l.png")
    export = [{"data": {"image": image}, "annotations": [{"was_cancelled": True, "result": []}]},
              {"data": {"image": image}, "annotations": []},
              {"data": {"image": image}, "annotations": [{"result": []}]}]
    (tmp_path / "export.json").write_text(json.dumps(export))
    records = datasets.load(f"labelstudio:{tmp_path / 'export.json'}")
    assert len(records) == 1 and records[0].boxes == [] and records[0].birads == "1"


def test_labelstudio_import_reads_annotations_as_training_does(tmp_path, busbra_dir):
    """model.regions decides for both: ground truth wins, experts must agree, "no lesion" counts."""
    image = str(busbra_dir / "Images" / "bus_0859-l.png")

    def annotation(*boxes, truth=False):
        return {"ground_truth": truth, "result": [
            {"type": "rectanglelabels", "value": {"x": x, "y": 10, "width": 20, "height": 20,
                                                  "rectanglelabels": [label]}} for x, label in boxes]}

    export = [{"id": 1, "data": {"image": image}, "annotations": [annotation((10, "BI-RADS 3")),
                                                                   annotation((11, "BI-RADS 3"))]},
              {"id": 2, "data": {"image": image}, "annotations": [annotation((10, "BI-RADS 3")), annotation()]},
              {"id": 3, "data": {"image": image}, "annotations": [annotation((10, "BI-RADS 3")),
                                                                   annotation((60, "BI-RADS 5"), truth=True)]}]
    (tmp_path / "export.json").write_text(json.dumps(export))
    records = {r.image_id: r for r in datasets.load(f"labelstudio:{tmp_path / 'export.json'}")}
    assert sorted(records) == ["1", "3"]  # task 2: a lesion against "no lesion" is left for review
    assert [b.category for b in records["1"].boxes] == ["3"] and records["3"].boxes[0].category == "5"



def _region(control: str, x: float, label: str) -> dict:
    return {"type": "rectanglelabels", "from_name": control, "to_name": "image",
            "value": {"x": x, "y": 10, "width": 20, "height": 20, "rectanglelabels": [label]}}


def test_labelstudio_passes_over_a_second_rectangle_tool_without_birads_labels(tmp_path, busbra_dir, capsys):
    """Calipers drawn with a tool of their own are no lesions; the export has no config to say
    which tool is which, so the labels tell. A second tool with BI-RADS labels is ambiguous."""
    image = str(busbra_dir / "Images" / "bus_0859-l.png")
    export = [{"id": 1, "data": {"image": image}, "annotations": [{"result": [
        _region("lesion", 10, "BI-RADS 4"), _region("caliper", 50, "distance"), _region("caliper", 60, "depth")]}]},
              {"id": 2, "data": {"image": image}, "annotations": [{"result": [_region("caliper", 5, "distance")]}]}]
    (tmp_path / "export.json").write_text(json.dumps(export))
    records = {r.image_id: r for r in datasets.load(f"labelstudio:{tmp_path / 'export.json'}")}
    width, _ = image_size(Path(image))
    assert [(b.category, b.x0) for b in records["1"].boxes] == [("4", pytest.approx(0.1 * width))]
    assert records["2"].boxes == [] and records["2"].birads == "1"  # only calipers: no lesion
    unnamed = dict(_region("", 70, "BI-RADS 5"), from_name=None)  # hand-made: read with any tool
    export.append({"id": 3, "data": {"image": image}, "annotations": [{"result": [unnamed]}]})
    (tmp_path / "export.json").write_text(json.dumps(export))
    assert [b.category for b in datasets.load(f"labelstudio:{tmp_path / 'export.json'}")[2].boxes] == ["5"]
    export[1]["annotations"][0]["result"].append(_region("second", 30, "BI-RADS 2"))
    (tmp_path / "export.json").write_text(json.dumps(export))
    _import_fails(tmp_path, f"labelstudio:{tmp_path / 'export.json'}", "2 of its 3 rectangle tools",
                  "caliper, lesion, second", capsys=capsys)


def test_aliased_labels_are_mapped_back_with_label_options(tmp_path, busbra_dir, capsys):
    """An export holds a label's alias (value="BI-RADS 3" alias="b3" exports "b3") and no config:
    ``--label b3=3`` names it, for Label Studio exports and COCO files; a calipers tool stays apart."""
    image = str(busbra_dir / "Images" / "bus_0859-l.png")
    export = [{"id": 1, "data": {"image": image}, "annotations": [{"result": [
        _region("lesion", 10, "b3"), _region("lesion", 40, "b4a"), _region("caliper", 60, "distance")]}]}]
    (tmp_path / "export.json").write_text(json.dumps(export))
    spec = f"labelstudio:{tmp_path / 'export.json'}"
    _import_fails(tmp_path, spec, "0 of its 2 rectangle tools", "--label NAME=CATEGORY", capsys=capsys)
    export[0]["annotations"][0]["result"].pop()  # the lesion tool alone
    (tmp_path / "export.json").write_text(json.dumps(export))
    _import_fails(tmp_path, spec, "no BI-RADS category: b3, b4a", "--label NAME=CATEGORY", capsys=capsys)
    out = tmp_path / "imported"
    assert birads(["import", "--data", spec, "--label", "b3=3", "--label", "b4a=BI-RADS 4A", "--out", str(out)]) == 0
    (record,) = json.loads((out / "records.json").read_text())
    assert [b["category"] for b in record["boxes"]] == ["3", "4A"] and record["birads"] == "4A"
    export[0]["annotations"][0]["result"].append(_region("caliper", 60, "distance"))
    (tmp_path / "export.json").write_text(json.dumps(export))  # the calipers' tool told apart by the map
    assert [b.category for b in datasets.load(spec, labels={"b3": "3", "b4a": "4A"})[0].boxes] == ["3", "4A"]
    coco = {"images": [{"id": 1, "file_name": image}], "categories": [{"id": 7, "name": "b3"}],
            "annotations": [{"image_id": 1, "category_id": 7, "bbox": [5, 5, 20, 20]}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    assert [b.category for b in datasets.load(f"coco:{tmp_path / 'c.json'}", labels={"b3": "BI-RADS 3"})[0].boxes] \
        == ["3"]  # the category as any BI-RADS name
    with pytest.raises(DataError, match="--label maps the label names of coco and labelstudio files"):
        datasets.load(f"busbra:{busbra_dir}", labels={"b3": "3"})
    with pytest.raises(SystemExit):  # argparse: a usage error, not a traceback
        birads(["import", "--data", spec, "--label", "b3", "--out", str(out)])
    assert "is not NAME=CATEGORY" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        birads(["import", "--data", spec, "--label", "b3=7", "--out", str(out)])
    assert "unknown BI-RADS category '7'" in capsys.readouterr().err

# --- bad input: a clear message naming the file (and row); nothing written ---------------------

def _import_fails(tmp_path, spec: str, *expected: str, capsys) -> None:
    out = tmp_path / "imported"
    assert birads(["import", "--data", spec, "--out", str(out)]) == 2
    message = capsys.readouterr().err
    for fragment in expected:
        assert fragment in message
    assert not out.exists()


def _coco_import_fails(tmp_path, file_name: str, annotations: list, *expected: str, capsys) -> None:
    """A COCO file of one image (id 1) and category "3" must fail to import, saying ``expected``."""
    coco = {"images": [{"id": 1, "file_name": file_name}], "annotations": annotations,
            "categories": [{"id": 1, "name": "3"}]}
    (tmp_path / "c.json").write_text(json.dumps(coco))
    _import_fails(tmp_path, f"coco:{tmp_path / 'c.json'}", *expected, capsys=capsys)


def test_missing_image_in_coco_names_the_file(tmp_path, capsys):
    _coco_import_fails(tmp_path, "gone.png", [], "c.json images[0]", "gone.png", "not found", capsys=capsys)


def test_unreadable_image_names_the_file(tmp_path, capsys):
    (tmp_path / "broken.png").write_text("not a png")
    _coco_import_fails(tmp_path, "broken.png", [], "broken.png", "not a readable image", capsys=capsys)


def test_mask_of_another_size_names_mask_and_row(tmp_path, busbra_dir, capsys):
    data = tmp_path / "busbra"
    shutil.copytree(busbra_dir, data)
    mask = data / "Masks" / "mask_1051-r.png"
    Image.open(mask).resize((50, 40)).save(mask)
    _import_fails(tmp_path, f"busbra:{data}", "mask_1051-r.png", "50x40", capsys=capsys)


def test_unknown_birads_value_names_csv_row(tmp_path, busbra_dir, capsys):
    data = tmp_path / "busbra"
    shutil.copytree(busbra_dir, data)
    csv_path = data / "bus_data.csv"
    lines = csv_path.read_text().splitlines()
    lines[3] = lines[3].replace(",benign,3,", ",benign,7,")
    csv_path.write_text("\n".join(lines) + "\n")
    _import_fails(tmp_path, f"busbra:{data}", "bus_data.csv row 4", "unknown BI-RADS category '7'",
                  capsys=capsys)


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "malformed JSON"),
    ('{"tasks": []}', "JSON list of tasks"),
    ('[{"no_data": 1}]', "task[0]: malformed task"),
    ('[{"data": {"image": "%s"}, "annotations": [{"result": [{"type": "rectanglelabels", '
     '"value": {"x": 1}}]}]}]', "task[0] result[0]: malformed region"),
    ('[{"data": {"image": "%s"}, "annotations": [{"result": [{"type": "rectanglelabels", "value": '
     '{"x": 1, "y": 1, "width": 5, "height": 5, "rectanglelabels": ["Cyst"]}}]}]}]',
     "labels that are no BI-RADS category: Cyst"),
])
def test_malformed_labelstudio_export(tmp_path, busbra_dir, capsys, content, fragment):
    image = busbra_dir / "Images" / "bus_0859-l.png"
    path = tmp_path / "export.json"
    path.write_text(content.replace("%s", str(image)) if "%s" in content else content)
    _import_fails(tmp_path, f"labelstudio:{path}", str(path), fragment, capsys=capsys)


def test_bad_data_spec(tmp_path, capsys):
    _import_fails(tmp_path, "pascal:/nowhere", "expected FORMAT:PATH", capsys=capsys)
    _import_fails(tmp_path, f"busbra:{tmp_path / 'nowhere'}", "nowhere: not found", capsys=capsys)


def test_existing_unrelated_output_folder_is_never_replaced(tmp_path):
    from model.io import StagedDirectory

    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not an earlier output"):
        with StagedDirectory(keep):
            pass
    assert (keep / "notes.txt").read_text() == "mine"


def test_breast_halves_alternate_patients_within_each_category():
    from model.datasets.breast_ultrasound import _halves
    from model.records import ImageRecord

    rows = [("10", "4A"), ("2", "4A"), ("3", "4A"), ("3", "4A"), ("7", "2"), ("5", "4B")]
    records = [ImageRecord(f"i{n}", "p", 1, 1, patient=f"breast-{case}", birads=c)
               for n, (case, c) in enumerate(rows)]
    split = [r.split for r in _halves(records)]
    # 4A patients by case number 2, 3, 10 -> part1, part2, part1; a patient's images stay together
    assert split == ["part1", "part1", "part2", "part2", "part1", "part1"]


def test_busbra_as_published_reads_the_five_fold_file(tmp_path, busbra_dir):
    """BUS-BRA's download has 5-fold-cv.csv and 10-fold-cv.csv, no 4-fold-cv.csv."""
    shipped = tmp_path / "BUSBRA"
    shutil.copytree(busbra_dir, shipped)
    rows = (shipped / "4-fold-cv.csv").read_text().splitlines()
    (shipped / "4-fold-cv.csv").unlink()
    five = ["ID,Pathology,kFold"] + [f"{r.split(',')[0]},{r.split(',')[1]},{n % 5 + 1}"
                                     for n, r in enumerate(rows[1:])]
    (shipped / "5-fold-cv.csv").write_text("\n".join(five) + "\n")
    (shipped / "10-fold-cv.csv").write_text("ID,Pathology,kFold\n")
    records = datasets.load(f"busbra:{shipped}")
    assert len(records) == 8
    expected = {r.split(",")[0]: f"fold{n % 5 + 1}" for n, r in enumerate(rows[1:])}
    assert {r.image_id: r.split for r in records} == {i: expected[i] for i in {r.image_id for r in records}}
    (shipped / "5-fold-cv.csv").unlink()
    (shipped / "10-fold-cv.csv").unlink()
    assert {r.split for r in datasets.load(f"busbra:{shipped}")} == {None}  # no fold file: no splits


def test_busbra_unpacked_into_its_own_folder_with_a_bom_table_is_read(tmp_path, busbra_dir):
    """The archive unpacks to BUSBRA/ inside the folder named; a table re-saved by Excel starts
    with a byte-order mark: both read as the download itself."""
    shipped = tmp_path / "downloads" / "BUSBRA"
    shutil.copytree(busbra_dir, shipped)
    table = shipped / "bus_data.csv"
    table.write_bytes(b"\xef\xbb\xbf" + table.read_bytes())
    records = datasets.load(f"busbra:{tmp_path / 'downloads'}")
    assert sorted(r.image_id for r in records) == sorted(r.image_id for r in datasets.load(f"busbra:{busbra_dir}"))


def _as_spreadsheet(csv_path: Path, xlsx_path: Path) -> None:
    """Write the CSV as TCIA ships it: an .xlsx whose numeric cells are numbers."""
    import csv

    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    with open(csv_path, newline="") as handle:
        for row in csv.reader(handle):
            sheet.append([int(v) if v.isdigit() else float(v) if v.replace(".", "", 1).isdigit() else v or None
                          for v in row])
    book.save(xlsx_path)


def _damaged_sheet(xlsx: Path) -> Path:
    """A copy of the spreadsheet whose sheet XML is cut short (in a folder of its own)."""
    import zipfile

    out = xlsx.parent.parent / "damaged" / xlsx.name
    out.parent.mkdir()
    shutil.copytree(next(xlsx.parent.glob("*images_and_masks")), out.parent / "BrEaST-Lesions_USG-images_and_masks")
    with zipfile.ZipFile(xlsx) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            content = source.read(item)
            target.writestr(item, content[: len(content) // 2] if item.filename.endswith("sheet1.xml") else content)
    return out


def test_breast_as_published_reads_the_spreadsheet_and_folder(tmp_path, breast_dir):
    shipped = tmp_path / "BrEaST"
    shutil.copytree(breast_dir / "images_and_masks", shipped / "BrEaST-Lesions_USG-images_and_masks")
    _as_spreadsheet(breast_dir / "clinical_data.csv",
                    shipped / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx")
    published = datasets.load(f"breast:{shipped}")
    converted = datasets.load(f"breast:{breast_dir}")
    assert len(published) == len(converted) == 4

    def key(r):
        return (r.image_id, r.birads, r.pathology, r.split, r.patient, [(b.x0, b.y0, b.x1, b.y1) for b in r.boxes])

    assert sorted(map(key, published)) == sorted(map(key, converted))
    # a subset of the download (images deleted, the spreadsheet whole): just the images present
    for image in (shipped / "BrEaST-Lesions_USG-images_and_masks").glob("case092*.png"):
        image.unlink()
    subset = datasets.load(f"breast:{shipped}")
    assert sorted(map(key, subset)) == sorted(key(r) for r in converted if not r.image_id.endswith("case092"))
    assert len(subset) == 3
    # rows of absent images are not checked either: one with no tumour mask does not stop the rest
    from openpyxl import load_workbook

    book = load_workbook(shipped / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx")
    sheet = book.active
    header = [c.value for c in sheet[1]]
    absent = [None] * len(header)
    absent[header.index("CaseID")], absent[header.index("Image_filename")] = 999, "case999.png"
    absent[header.index("BIRADS")] = "3"
    sheet.append(absent)
    book.save(shipped / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx")
    assert len(datasets.load(f"breast:{shipped}")) == 3
    damaged = _damaged_sheet(shipped / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx")
    with pytest.raises(DataError, match="not a readable spreadsheet"):  # its sheet is parsed row by row
        datasets.load(f"breast:{damaged.parent}")
    (shipped / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx").write_bytes(b"not a spreadsheet")
    with pytest.raises(DataError, match="not a readable spreadsheet"):
        datasets.load(f"breast:{shipped}")
    (shipped / "BrEaST-Lesions-USG-clinical-data-Dec-15-2023.xlsx").unlink()
    with pytest.raises(DataError, match="no clinical data table"):
        datasets.load(f"breast:{shipped}")


@pytest.mark.parametrize("spec", ["coco:{dir}", "records:{dir}", "labelstudio:{dir}", "busbra:{csv}",
                                  "records:{truncated}"])
def test_data_of_the_wrong_kind_is_a_one_line_error(tmp_path, busbra_dir, capsys, spec):
    (tmp_path / "truncated.json").write_text('[{"image_id": "a", "path": ')
    data = spec.format(dir=tmp_path, csv=busbra_dir / "bus_data.csv", truncated=tmp_path / "truncated.json")
    assert birads(["import", "--data", data, "--out", str(tmp_path / "out")]) == 2
    assert "birads import: error:" in capsys.readouterr().err


def test_holdout_splits_never_train(busbra_dir):
    from model.cli import _training_and_holdout, parser

    args = parser().parse_args(["pretrain", "--data", f"busbra:{busbra_dir}", "--out", "x",
                                "--holdout-splits", "fold4"])
    training, holdout = _training_and_holdout(args)
    assert holdout and {r.split for r in holdout} == {"fold4"}
    assert training and "fold4" not in {r.split for r in training}
    args.holdout_splits = ["fold9"]
    with pytest.raises(datasets.SplitsNotFound, match=r"has no images in fold9 \(its splits: fold1"):
        _training_and_holdout(args)


@pytest.mark.parametrize("option", ["--splits", "--exclude-splits"])
def test_a_split_name_the_data_does_not_hold_is_refused_not_ignored(busbra_dir, tmp_path, capsys, option):
    """A typo, or the publisher's 5-fold table where a 4-fold one was meant: the import would
    quietly hold less, or more, than it says."""
    assert birads(["import", "--data", f"busbra:{busbra_dir}", option, "fold2", "fold99",
                   "--out", str(tmp_path / "out")]) == 2
    assert "has no images in fold99" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_a_home_folder_in_data_is_expanded(busbra_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(busbra_dir.parent))
    assert datasets.load(f"busbra:~/{busbra_dir.name}") == datasets.load(f"busbra:{busbra_dir}")


def test_an_out_folder_that_cannot_be_made_is_an_error_not_a_traceback(busbra_dir, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    assert birads(["import", "--data", f"busbra:{busbra_dir}", "--out", str(tmp_path / "a-file" / "out")]) == 2
    assert "birads import: error:" in capsys.readouterr().err


def test_abbreviated_options_are_not_read_as_another_option():
    from model.cli import parser

    with pytest.raises(SystemExit):  # --out is no option of box-classifier, not its --outline-loss
        parser().parse_args(["box-classifier", "--data", "busbra:x", "--model", "m", "--out", "1"])


def test_load_splits_names_a_split_the_data_does_not_hold(busbra_dir):
    spec = f"busbra:{busbra_dir}"
    chosen = datasets.load_splits(spec, ["fold1", "fold2"])
    assert chosen and {r.split for r in chosen} == {"fold1", "fold2"}
    assert len(datasets.load_splits(spec)) == len(datasets.load(spec))  # no splits named: all of them
    with pytest.raises(datasets.SplitsNotFound, match=r"has no images in fold9 \(its splits: fold1, fold2"):
        datasets.load_splits(spec, ["fold1", "fold9"])


def test_coco_boxes_for_no_image_are_an_error_not_a_lesion_free_image(tmp_path, busbra_dir, capsys):
    shutil.copy(busbra_dir / "Images" / "bus_0090-r.png", tmp_path / "a.png")
    _coco_import_fails(tmp_path, "a.png", [{"image_id": "1", "bbox": [10, 10, 40, 30], "category_id": 1}],
                       "annotations for image ids ['1']", "type included", capsys=capsys)


def test_busbra_images_in_no_fold_are_counted(tmp_path, busbra_dir, caplog):
    data = tmp_path / "busbra"
    shutil.copytree(busbra_dir, data)
    folds = (data / "4-fold-cv.csv").read_text().splitlines()
    (data / "4-fold-cv.csv").write_text("\n".join(folds[:-2]) + "\n")
    with caplog.at_level("WARNING"):
        records = datasets.load(f"busbra:{data}")
    assert sum(r.split is None for r in records) == 2
    assert "2 images are in no fold" in caplog.text


def test_simulate_refuses_resume_it_cannot_honour(capsys):
    assert birads(["simulate", "--data", "busbra:d", "--holdout-splits", "fold4", "--out", "o", "--resume"]) == 2
    assert "simulate always starts afresh" in capsys.readouterr().err


def test_simulate_names_a_replay_split_the_replay_data_does_not_hold(tmp_path, busbra_dir, breast_dir, capsys):
    assert birads(["simulate", "--data", f"breast:{breast_dir}", "--holdout-splits", "part1",
                   "--out", str(tmp_path / "o"), "--replay-data", f"busbra:{busbra_dir}",
                   "--replay-splits", "fold1", "fold9"]) == 2
    assert "has no images in fold9" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before anything was trained or written


def test_evaluate_refuses_a_foreign_out_folder_before_predicting(tmp_path, busbra_dir, capsys):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("months of work")
    assert birads(["evaluate", "--data", f"busbra:{busbra_dir}", "--model", str(tmp_path / "no-model"),
                   "--out", str(tmp_path / "mine")]) == 2
    assert "is not an earlier output of ours" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "months of work"


def test_import_never_writes_into_a_foreign_folder_or_over_a_file(tmp_path, busbra_dir, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "records.json").write_text("mine")
    (tmp_path / "a-file").write_text("mine")
    for out in ("notes", "a-file"):
        assert birads(["import", "--data", f"busbra:{busbra_dir}", "--out", str(tmp_path / out)]) == 2
        assert "is not an earlier output of ours" in capsys.readouterr().err
    assert (tmp_path / "notes" / "records.json").read_text() == "mine" and (tmp_path / "a-file").read_text() == "mine"
    assert birads(["import", "--data", f"busbra:{busbra_dir}", "--out", str(tmp_path / "new")]) == 0
    assert birads(["import", "--data", f"busbra:{busbra_dir}", "--out", str(tmp_path / "new")]) == 0  # ours: replaced
    assert sorted(p.name for p in (tmp_path / "new").iterdir() if not p.name.startswith(".")) == [
        "coco.json", "labelstudio.json", "records.json", "summary.json"]


def test_an_unknown_biopsy_threshold_is_refused_before_any_prediction(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        birads(["evaluate", "--data", "busbra:x", "--model", "m", "--out", str(tmp_path / "o"),
                "--biopsy-threshold", "6"])
    assert exited.value.code == 2 and "unknown BI-RADS category '6'" in capsys.readouterr().err


def test_coco_boxes_in_another_scale_or_of_no_lesion_are_caught(tmp_path, busbra_dir, capsys):
    """A COCO file whose image is declared at another size holds boxes in that size's pixels: refused,
    as a box outside its image or of no size is. A box labelled BI-RADS 1 ("no lesion") is left out,
    as the Label Studio importer leaves it out."""
    image = busbra_dir / "Images" / "bus_0859-l.png"
    shutil.copy(image, tmp_path / "a.png")
    width, height = Image.open(image).size

    def coco(declared: tuple[int, int], box: list[float], name: str = "3") -> str:
        data = {"images": [{"id": 1, "file_name": "a.png", "width": declared[0], "height": declared[1]}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": box}],
                "categories": [{"id": 1, "name": name}]}
        (tmp_path / "c.json").write_text(json.dumps(data))
        return f"coco:{tmp_path / 'c.json'}"

    _import_fails(tmp_path, coco((800, 600), [500, 400, 200, 150]), "declared 800x600", f"{width}x{height}",
                  capsys=capsys)
    _import_fails(tmp_path, coco((width, height), [width + 5, 10, 20, 20]), "a box outside", capsys=capsys)
    _import_fails(tmp_path, coco((width, height), [10, 10, 0, 20]), "a box of no size", capsys=capsys)
    [record] = datasets.load(coco((width, height), [10, 10, 20, 20], name="BI-RADS 1"))
    assert record.boxes == []
    [record] = datasets.load(coco((width, height), [10, 10, 20, 20]))
    assert record.boxes[0].category == "3"


def test_a_labelstudio_export_s_image_is_the_field_its_regions_are_drawn_on(tmp_path, busbra_dir):
    records = datasets.load(f"busbra:{busbra_dir}")[:1]
    write_dataset(records, tmp_path / "out")
    export = tmp_path / "out" / "labelstudio.json"
    tasks = json.loads(export.read_text())
    tasks[0]["data"] = {"pid": "P12", **tasks[0]["data"]}  # a text field before the image
    export.write_text(json.dumps(tasks))
    [record] = datasets.load(f"labelstudio:{export}")
    assert record.path == records[0].path
