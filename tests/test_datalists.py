"""Datalist converters on small fixtures in each dataset's published layout (files written here
with pydicom/numpy, column names exactly as published); boxes checked against hand-worked values."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from monai_smalldet.data.datalists import (
    ConversionError,
    convert_cbis_ddsm,
    convert_csv,
    convert_inbreast,
    convert_vindr_mammo,
    write_datalist,
)
from monai_smalldet.data.dicom_writer import write_mammogram_dicom
from monai_smalldet.data.synthetic import load_datalist

#: the generic CSV's columns (monai_smalldet.data.datalists.CSV_COLUMNS)
CSV_HEADER = [
    "image",
    "patient_id",
    "split",
    "laterality",
    "view",
    "x1",
    "y1",
    "x2",
    "y2",
    "pathology",
    "lesion_type",
]
#: finding_annotations.csv, columns in the published order
VINDR_HEADER = (
    "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,"
    "finding_categories,finding_birads,xmin,ymin,xmax,ymax,split"
).split(",")


def _dicom(path: Path, rows: int, cols: int, laterality: str = "L", view: str = "CC") -> Path:
    return write_mammogram_dicom(
        path, np.full((rows, cols), 700, np.uint16), pixel_spacing_mm=0.1, laterality=laterality, view=view
    )


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def vindr(tmp_path) -> Path:
    """Four studies (one per patient); 120 x 100 px images (rows x columns)."""
    root = tmp_path / "vindr-mammo"
    images = {
        ("s1", "i1"): ("L", "CC"),
        ("s1", "i2"): ("L", "MLO"),
        ("s2", "i3"): ("R", "CC"),
        ("s3", "i4"): ("R", "CC"),
        ("s4", "i5"): ("L", "CC"),
        ("s5", "i6"): ("L", "CC"),
    }
    for (study, image), (lat, view) in images.items():
        if image != "i6":  # i6: the annotation's image file is missing
            _dicom(root / "images" / study / f"{image}.dicom", 120, 100, lat, view)

    def row(study, image, cats, birads, box, split="training", size=(120, 100)):
        lat, view = images[(study, image)]
        return [
            study,
            f"se-{study}",
            image,
            lat,
            view,
            size[0],
            size[1],
            "BI-RADS 4",
            "DENSITY C",
            cats,
            birads,
            *box,
            split,
        ]

    none = ["", "", "", ""]
    rows = [
        row("s1", "i1", "['Mass']", "BI-RADS 4", [10.5, 20.0, 30.5, 44.0]),  # malignant
        row("s1", "i1", "['Suspicious Calcification']", "BI-RADS 3", [50, 60, 58, 70]),  # benign
        row("s1", "i1", "['Skin Thickening']", "", [0, 0, 5, 5]),  # no BI-RADS: rejected
        row("s1", "i2", "['No Finding']", "", none),
        row(
            "s2",
            "i3",
            "\"['Nipple Retraction', 'Mass']\"".strip('"'),
            "BI-RADS 5",
            [-1.5, 100.0, 40.0, 125.0],
        ),
        row("s3", "i4", "['Mass']", "BI-RADS 4", [10, 10, 20, 20], split="test"),
        row("s4", "i5", "['Mass']", "BI-RADS 4", [10, 10, 20, 20], size=(130, 100)),  # size mismatch
        row("s4", "i5", "['No Finding']", "", none, size=(130, 100)),  # the same mismatch
        row("s5", "i6", "['No Finding']", "", none),  # missing file
        row("s2", "i3", "['Mass']", "BI-RADS 4", [150, 10, 160, 20]),  # outside the 100 px wide image
    ]
    _write_csv(root / "finding_annotations.csv", VINDR_HEADER, rows)
    return root


def test_vindr_mammo_boxes_labels_splits_and_the_report(vindr, tmp_path):
    datalist, report = convert_vindr_mammo(vindr, val_fraction=0.0)
    by_image = {Path(e["image"]).stem: e for split in datalist.values() for e in split}
    assert set(by_image) == {"i1", "i2", "i3", "i4"}
    i1 = by_image["i1"]
    assert i1["box"] == [[10.5, 20.0, 30.5, 44.0]] and i1["label"] == [1] and i1["lesion_type"] == ["Mass"]
    assert i1["benign_box"] == [[50.0, 60.0, 58.0, 70.0]] and i1["benign_type"] == [
        "Suspicious Calcification"
    ]
    assert (i1["laterality"], i1["view"], i1["patient_id"], i1["shape"]) == ("L", "CC", "s1", [120, 100])
    assert by_image["i2"]["box"] == [] and by_image["i2"]["benign_box"] == []
    # crossing the border: clipped to the 100 x 120 image (x >= 0, y <= 120)
    assert by_image["i3"]["box"] == [[0.0, 100.0, 40.0, 120.0]]
    assert by_image["i3"]["lesion_type"] == ["Nipple Retraction; Mass"] and report.clipped_boxes == 1
    assert [Path(e["image"]).stem for e in datalist["test"]] == ["i4"]
    reasons = {(r["row"], Path(r["file"]).stem): r["reason"] for r in report.rejected}
    assert "no BI-RADS grade" in reasons[(4, "i1")]
    assert "annotated size (130, 100) != image size (120, 100)" in reasons[(8, "i5")]
    assert reasons[(10, "i6")] == "image file not found"
    assert "outside the 100 x 120 image" in reasons[(11, "i3")]
    assert "annotated size" in reasons[(9, "i5")]
    assert len(report.rejected) == 5 and report.rows == 10
    # written with its report; MONAI's decathlon loader reads it back with absolute paths
    out, report_path = write_datalist(datalist, report, vindr / "datalist.json")
    assert json.loads(report_path.read_text())["rows_rejected"] == 5
    loaded = load_datalist(out, "training")
    assert all(Path(e["image"]).is_file() for e in loaded) and len(loaded) == 3


def test_vindr_mammo_birads_mapping_is_a_setting(vindr):
    datalist, _ = convert_vindr_mammo(vindr, val_fraction=0.0, malignant_birads=("BI-RADS 5",))
    by_image = {Path(e["image"]).stem: e for split in datalist.values() for e in split}
    assert by_image["i1"]["box"] == []  # BI-RADS 4 is then neither malignant nor benign: reported
    assert by_image["i3"]["box"] == [[0.0, 100.0, 40.0, 120.0]]


def test_the_validation_split_is_cut_by_patient_and_seeded(tmp_path):
    """Forty patients with two images each: 10% of the patients, both of their images, and the
    same patients for the same seed."""
    rows = []
    for p in range(40):
        for view in ("CC", "MLO"):
            _dicom(tmp_path / "img" / f"p{p}_{view}.dcm", 40, 30, view=view)
            rows.append([f"img/p{p}_{view}.dcm", f"P{p}", "", "L", view, "", "", "", "", "", ""])
    header = CSV_HEADER
    path = _write_csv(tmp_path / "findings.csv", header, rows)
    a, _ = convert_csv(path, val_fraction=0.1, seed=3)
    b, _ = convert_csv(path, val_fraction=0.1, seed=3)
    c, _ = convert_csv(path, val_fraction=0.1, seed=4)
    val = {e["patient_id"] for e in a["validation"]}
    assert len(val) == 4 and len(a["validation"]) == 8 and len(a["training"]) == 72
    assert not val & {e["patient_id"] for e in a["training"]}
    assert a == b and {e["patient_id"] for e in c["validation"]} != val


def test_generic_csv_rows_and_their_problems(tmp_path):
    _dicom(tmp_path / "a.dcm", 50, 40)
    header = CSV_HEADER
    rows = [
        ["a.dcm", "P1", "test", "R", "MLO", 1, 2, 11, 22, "malignant", "mass"],
        ["a.dcm", "P1", "test", "R", "MLO", 5, 5, 9, 9, "benign", "cyst"],
        ["a.dcm", "P1", "test", "R", "MLO", 5, 5, 9, 9, "probably", ""],  # unknown pathology
        ["a.dcm", "P1", "test", "R", "MLO", 9, 5, 5, 9, "malignant", ""],  # empty box
        ["a.dcm", "P1", "test", "R", "MLO", "x", 5, 5, 9, "malignant", ""],  # not a number
        ["missing.dcm", "P2", "", "", "", "", "", "", "", "", ""],
        ["a.dcm", "P1", "later", "R", "MLO", "", "", "", "", "", ""],  # unknown split
    ]
    datalist, report = convert_csv(_write_csv(tmp_path / "f.csv", header, rows))
    (entry,) = datalist["test"]
    assert (
        entry["image"] == "a.dcm"
        and entry["box"] == [[1.0, 2.0, 11.0, 22.0]]
        and entry["lesion_type"] == ["mass"]
    )
    assert entry["benign_box"] == [[5.0, 5.0, 9.0, 9.0]] and entry["laterality"] == "R"
    reasons = [r["reason"] for r in report.rejected]
    assert len(reasons) == 5
    assert "unknown pathology 'probably'" in reasons[0] and "empty box" in reasons[1]
    assert "could not convert string" in reasons[2] and reasons[3] == "image file not found"
    assert "unknown split 'later'" in reasons[4]


def test_nothing_is_written_when_nothing_converts(tmp_path):
    header = ["image", "patient_id"]
    path = _write_csv(tmp_path / "f.csv", header, [["nowhere.dcm", "P1"]])
    with pytest.raises(ConversionError, match="no image could be converted"):
        convert_csv(path)
    with pytest.raises(ConversionError, match=r"missing column\(s\) \['patient_id'\]"):
        convert_csv(_write_csv(tmp_path / "g.csv", ["image"], [["a.dcm"]]))
    with pytest.raises(ConversionError, match="finding_annotations.csv"):
        convert_vindr_mammo(tmp_path / "no-dataset")


def test_the_datalist_command(vindr, tmp_path, capsys):
    from monai_smalldet.cli import main

    out = tmp_path / "lists" / "vindr.json"
    assert (
        main(["datalist", str(vindr), "--format", "vindr-mammo", "--out", str(out), "--val-fraction", "0"])
        == 0
    )
    assert "5 row(s) rejected" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert {k: len(v) for k, v in data.items()} == {"training": 3, "validation": 0, "test": 1}
    assert (out.parent / "vindr.report.json").is_file()
    assert all((out.parent / e["image"]).is_file() for split in data.values() for e in split)
    assert (
        main(
            ["datalist", str(tmp_path / "none"), "--format", "vindr-mammo", "--out", str(tmp_path / "x.json")]
        )
        == 2
    )
    assert "finding_annotations.csv" in capsys.readouterr().err and not (tmp_path / "x.json").exists()


def _inbreast_xml(path: Path, rois: list[tuple[str, list[tuple[float, float]]]]) -> None:
    """An OsiriX plist as INbreast releases it (only the keys the converter reads, plus a few)."""
    import plistlib

    items = [
        {
            "Name": name,
            "NumberOfPoints": len(points),
            "Point_px": [f"({x:.2f}, {y:.2f})" for x, y in points],
            "Point_mm": [f"({x * 0.07:.3f}, {y * 0.07:.3f}, 0)" for x, y in points],
            "Area": 0.0,
            "IndexInImage": i,
            "Type": 15,
        }
        for i, (name, points) in enumerate(rois)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        plistlib.dump({"Images": [{"ImageIndex": 0, "NumberOfROIs": len(items), "ROIs": items}]}, fh)


def test_inbreast_rois_birads_and_patient_splits(tmp_path):
    root = tmp_path / "INbreast Release 1.0"
    files = {
        "101": ("aaaa", "L", "CC", "4c"),
        "102": ("aaaa", "L", "ML", "4c"),
        "201": ("bbbb", "R", "CC", "2"),
        "301": ("cccc", "R", "ML", "1"),
    }
    for name, (patient, lat, view, _) in files.items():
        _dicom(
            root / "AllDICOMs" / f"{name}_{patient}_MG_{lat}_{view}_ANON.dcm",
            200,
            150,
            lat,
            "MLO" if view == "ML" else view,
        )
    mass = [(20.0, 30.0), (60.5, 25.0), (70.0, 80.0), (25.0, 90.25)]
    _inbreast_xml(
        root / "AllXML" / "101.xml",
        [
            ("Mass", mass),
            ("Calcification", [(5.0, 5.0)]),
            ("Cluster", [(100, 100), (110, 100), (105, 120)]),
            ("Spiculated region", [(140, 190), (160, 190), (150, 210)]),
        ],  # crosses the border: clipped
    )
    _inbreast_xml(
        root / "AllXML" / "201.xml",
        [("Mass", [(10, 10), (20, 10), (15, 30)]), ("Mass", [(300, 10), (310, 10), (305, 20)])],
    )
    lines = ["Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"]
    for name, (_, lat, view, birads) in files.items():
        lines.append(f"removed;removed;{lat};{'MLO' if view == 'ML' else view};201001;{name};2;{birads}")
    lines += ["removed;removed;L;CC;201001;999;2;4a", "removed;removed;R;CC;201001;301;                  ;7"]
    (root / "INbreast.csv").write_text("\n".join(lines) + "\n")
    datalist, report = convert_inbreast(root, val_fraction=0.0, test_fraction=0.0)
    by_name = {Path(e["image"]).name.split("_")[0]: e for split in datalist.values() for e in split}
    assert set(by_name) == {"101", "102", "201", "301"}
    e101 = by_name["101"]
    assert e101["box"][0] == [20.0, 25.0, 70.0, 90.25] and e101["lesion_type"][0] == "mass"
    assert (
        e101["box"][1] == [100.0, 100.0, 110.0, 120.0] and e101["lesion_type"][1] == "calcification_cluster"
    )
    assert e101["box"][2] == [140.0, 190.0, 150.0, 200.0]  # clipped at the 150 x 200 image's border
    assert e101["benign_box"] == [] and e101["patient_id"] == "aaaa" and e101["birads"] == "4c"
    assert report.settings["point_rois_skipped"] == 1 and report.clipped_boxes == 1
    assert by_name["201"]["benign_box"] == [[10.0, 10.0, 20.0, 30.0]] and by_name["201"]["box"] == []
    assert by_name["301"]["box"] == [] and by_name["102"]["view"] == "MLO"
    reasons = sorted(r["reason"] for r in report.rejected)
    assert len(reasons) == 3
    assert "ROI 'Mass': box [300.0, 10.0, 310.0, 20.0] outside the 150 x 200 image" in reasons
    assert "no DICOM file for File Name '999'" in reasons and "unknown Bi-Rads '7'" in reasons
    # no official split: whole patients go to test (and validation)
    split, _ = convert_inbreast(root, val_fraction=0.0, test_fraction=0.34, seed=1)
    test_patients = {e["patient_id"] for e in split["test"]}
    assert len(test_patients) == 1 and not test_patients & {e["patient_id"] for e in split["training"]}


MASS_HEADER = (
    "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,mass shape,"
    "mass margins,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path"
).split(",")
CALC_HEADER = (
    "patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,calc type,"
    "calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path"
).split(",")


def _mask_dicom(path: Path, mask: np.ndarray) -> Path:
    """An 8-bit ROI mask (0/255), as CBIS-DDSM ships them."""
    import pydicom

    ds = pydicom.dcmread(_dicom(path, *mask.shape))
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = (mask.astype(np.uint8) * 255).tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    for keyword in ("WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_cbis_ddsm_masks_to_boxes_in_the_nbia_download_layout(tmp_path):
    """Two CSVs as published (the calc one with its 'breast density' header and crop/mask names
    in the other order), files where the NBIA retriever puts them (renamed studies, series and
    files): the mask is found by size, each of its connected components is a box."""
    root = tmp_path / "CBIS-DDSM"
    full = "Mass-Training_P_00001_LEFT_CC"
    _dicom(
        root / full / "07-20-2016-DDSM-NA-74994" / "1.000000-full mammogram images-24515" / "1-1.dcm", 90, 60
    )
    roi = root / f"{full}_1" / "07-21-2016-DDSM-NA-09887" / "1.000000-ROI mask images-64449"
    mask = np.zeros((90, 60), bool)
    mask[10:20, 5:15] = True  # component 1: x 5-15, y 10-20
    mask[50:71, 30:41] = True  # component 2: x 30-41, y 50-71
    _mask_dicom(roi / "1-1.dcm", mask)
    _dicom(roi / "1-2.dcm", 21, 11)  # the cropped image, listed as the mask in the CSV below
    calc_full = "Calc-Training_P_00005_RIGHT_CC"
    _dicom(
        root / calc_full / "08-07-2016-DDSM-NA-1" / "1.000000-full mammogram images-3" / "1-1.dcm",
        90,
        60,
        "R",
    )
    small = np.zeros((45, 30), bool)
    small[1:3, 1:3] = True  # a mask of another size than its image: rejected
    _mask_dicom(
        root / f"{calc_full}_1" / "08-07-2016-DDSM-NA-2" / "1.000000-ROI mask images-4" / "1-1.dcm", small
    )
    uids = "1.3.6.1.4.1.9590.100.1.2.1/1.3.6.1.4.1.9590.100.1.2.2"
    mass_rows = [
        [
            "P_00001",
            3,
            "LEFT",
            "CC",
            1,
            "mass",
            "IRREGULAR",
            "SPICULATED",
            4,
            "MALIGNANT",
            4,
            f"{full}/{uids}/000000.dcm",
            f"{full}_1/{uids}/000000.dcm",
            f"{full}_1/{uids}/000001.dcm\n",
        ],
        [
            "P_00002",
            3,
            "LEFT",
            "CC",
            1,
            "mass",
            "OVAL",
            "CIRCUMSCRIBED",
            3,
            "BENIGN",
            3,
            f"Mass-Training_P_00002_LEFT_CC/{uids}/000000.dcm",
            "x_1/a/b/000000.dcm",
            "x_1/a/b/000001.dcm",
        ],
    ]
    calc_rows = [
        [
            "P_00005",
            2,
            "RIGHT",
            "CC",
            1,
            "calcification",
            "PLEOMORPHIC",
            "CLUSTERED",
            4,
            "BENIGN_WITHOUT_CALLBACK",
            2,
            f"{calc_full}/{uids}/000000.dcm",
            f"{calc_full}_1/{uids}/000001.dcm\n",
            f"{calc_full}_1/{uids}/000000.dcm",
        ],
    ]
    _write_csv(root / "mass_case_description_train_set.csv", MASS_HEADER, mass_rows)
    _write_csv(root / "calc_case_description_train_set.csv", CALC_HEADER, calc_rows)
    datalist, report = convert_cbis_ddsm(
        root,
        csv_files=("mass_case_description_train_set.csv", "calc_case_description_train_set.csv"),
        val_fraction=0,
    )
    (entry,) = datalist["training"]
    assert Path(entry["image"]).parts[0] == full and entry["patient_id"] == "P_00001"
    assert sorted(entry["box"]) == [[5.0, 10.0, 15.0, 20.0], [30.0, 50.0, 41.0, 71.0]]
    assert (
        entry["lesion_type"] == ["mass", "mass"] and entry["laterality"] == "L" and entry["benign_box"] == []
    )
    reasons = [r["reason"] for r in report.rejected]
    assert reasons[0] == "0 full-image files found"  # P_00002: not downloaded
    assert "ROI mask: none of the image's size (90, 60)" in reasons[1] and len(reasons) == 2
    with pytest.raises(ConversionError, match="mass_case_description_test_set.csv"):
        convert_cbis_ddsm(root)  # the default four CSVs: two are missing


def _png(path: Path, rows: int, cols: int) -> Path:
    from PIL import Image

    Image.fromarray(np.full((rows, cols), 900, np.uint16)).save(path)
    return path


def test_each_entry_says_where_its_spacing_came_from_and_the_loader_follows_it(tmp_path):
    """Header spacing (0.1 mm, ImagerPixelSpacing) wins over the CSV's column and ``--spacing``;
    a PNG takes the CSV's column, else ``--spacing``, else is ``missing``; the loader uses an
    entry's spacing only for a file that records none."""
    from monai_smalldet.transforms import LoadMammogramd

    _dicom(tmp_path / "a.dcm", 50, 40)
    _png(tmp_path / "b.png", 30, 20)
    _png(tmp_path / "c.png", 30, 20)
    header = [*CSV_HEADER, "spacing_mm"]
    rows = [
        ["a.dcm", "P1", "test", "L", "CC", "", "", "", "", "", "", "0.05"],  # the header's 0.1 wins
        ["b.png", "P2", "test", "L", "CC", "", "", "", "", "", "", "0.085"],
        ["c.png", "P3", "test", "L", "CC", "", "", "", "", "", "", ""],
        ["c.png", "P3", "test", "L", "CC", "", "", "", "", "", "", "-1"],  # rejected, named
    ]
    csv_path = _write_csv(tmp_path / "f.csv", header, rows)
    datalist, report = convert_csv(csv_path)
    got = {e["image"]: (e["pixel_spacing_mm"], e["spacing_source"]) for e in datalist["test"]}
    assert got == {
        "a.dcm": ([0.1, 0.1], "ImagerPixelSpacing"),
        "b.png": ([0.085, 0.085], "csv"),
        "c.png": (None, "missing"),
    }
    assert report.spacing_sources == {"ImagerPixelSpacing": 1, "csv": 1, "missing": 1}
    assert [r["row"] for r in report.rejected] == [5] and "malformed row" in report.rejected[0]["reason"]

    datalist, report = convert_csv(csv_path, spacing_mm=0.2)
    entries = {e["image"]: e for e in datalist["test"]}
    assert (entries["c.png"]["pixel_spacing_mm"], entries["c.png"]["spacing_source"]) == ([0.2, 0.2], "user")
    assert entries["a.dcm"]["spacing_source"] == "ImagerPixelSpacing"

    load = LoadMammogramd(keys="image")
    for name, want_mm, want_source in (("c.png", 0.2, "user"), ("b.png", 0.085, "csv"), ("a.dcm", 0.1, None)):
        entry = dict(entries[name], image=str(tmp_path / name))
        img = load(entry)["image"]
        assert np.allclose(img.meta["pixel_spacing_mm"], [want_mm, want_mm])
        assert np.allclose(np.diag(img.affine.numpy())[:2], [want_mm, want_mm])
        assert img.meta["spacing_source"] == (want_source or "ImagerPixelSpacing")
    lying = dict(entries["a.dcm"], image=str(tmp_path / "a.dcm"), pixel_spacing_mm=[0.3, 0.3])
    assert np.allclose(load(lying)["image"].meta["pixel_spacing_mm"], [0.1, 0.1])  # the header wins
    ignored = LoadMammogramd(keys="image", spacing_key=None)(
        dict(entries["c.png"], image=str(tmp_path / "c.png"))
    )
    assert ignored["image"].meta["spacing_source"] == "default"
    with pytest.raises(ValueError, match=r"c\.png: the item's 'pixel_spacing_mm'"):
        load({"image": str(tmp_path / "c.png"), "pixel_spacing_mm": [0, 1]})


def test_the_datalist_command_warns_of_missing_spacing(tmp_path, capsys):
    from monai_smalldet.cli import main

    _png(tmp_path / "b.png", 30, 20)
    csv_path = _write_csv(tmp_path / "f.csv", ["image", "patient_id"], [["b.png", "P1"]])
    out = tmp_path / "d.json"
    assert main(["datalist", str(csv_path), "--format", "csv", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "pixel spacing from: missing 1" in captured.out and "--spacing MM" in captured.err
    assert main(["datalist", str(csv_path), "--format", "csv", "--out", str(out), "--spacing", "0.05"]) == 0
    assert "pixel spacing from: user 1" in capsys.readouterr().out
    (entry,) = json.loads(out.read_text())["training"]
    assert entry["pixel_spacing_mm"] == [0.05, 0.05]
