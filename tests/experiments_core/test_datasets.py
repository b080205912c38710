import json
import os

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image
from pycocotools import mask as mask_utils

from experiments.core.datasets import (
    VOC_CLASSES,
    DatasetFormatError,
    PathNotAllowed,
    box_mask,
    check_path,
    read_coco2014_val,
    read_ilsvrc2012_val,
    read_imagenet_segmentation,
    read_voc2007,
)
from experiments.core.imageops import preprocess_mask
from experiments.core.protocols import get_protocol


def write_jpeg(path, width=40, height=30, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), (value, value, value)).save(path)


# ----------------------------------------------------------------------------- ILSVRC

# Leaves with ILSVRC2012_IDs deliberately not in WordNet-ID order, plus one inner node.
SYNSETS = [
    (1, "n03000000", "gamma, third", 0),
    (2, "n01000000", "alpha", 0),
    (3, "n02000000", "beta, second", 0),
    (4, "n00000001", "entity", 3),
]


def write_devkit(root):
    data = root / "ILSVRC2012_devkit_t12" / "data"
    data.mkdir(parents=True)
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height", "num_train_images"]
    synsets = np.zeros((len(SYNSETS), 1), dtype=[(f, object) for f in fields])
    for i, (sid, wnid, words, children) in enumerate(SYNSETS):
        synsets[i, 0] = (np.array([[sid]], dtype=np.uint16), wnid, words, "a gloss", np.array([[children]], dtype=np.uint8),
                         np.zeros((1, children), dtype=np.int16), np.array([[0]], dtype=np.uint8), np.array([[1300]], dtype=np.uint16))
    scipy.io.savemat(data / "meta.mat", {"synsets": synsets})
    # images 1..4 have IDs 1, 2, 3, 1 → wnids n03, n01, n02, n03 → sorted indices 2, 0, 1, 2
    (data / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n3\n1\n")
    return root / "ILSVRC2012_devkit_t12"


def test_ilsvrc_devkit_maps_ids_to_sorted_wnid_order(tmp_path):
    devkit = write_devkit(tmp_path)
    for n in (1, 2, 4):  # image 3 is missing: a partial copy still reads
        write_jpeg(tmp_path / "val" / f"ILSVRC2012_val_{n:08d}.JPEG")
    ds = read_ilsvrc2012_val(tmp_path / "val", devkit=devkit, allowed_roots=[tmp_path])
    assert [s.key for s in ds] == ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002", "ILSVRC2012_val_00000004"]
    assert [s.label for s in ds] == [2, 0, 2]
    assert ds.extra["wnids"] == ("n01000000", "n02000000", "n03000000")
    assert ds.class_names == ("alpha", "beta", "gamma")
    assert ds[0].load_image().size == (40, 30)


def test_ilsvrc_loc_solution_csv_with_boxes(tmp_path):
    (tmp_path / "LOC_synset_mapping.txt").write_text("n01000000 alpha\nn02000000 beta, second\nn03000000 gamma\n")
    (tmp_path / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n"
        "ILSVRC2012_val_00000002,n02000000 5 6 20 25 n02000000 0 0 3 4 \n"
        "ILSVRC2012_val_00000001,n03000000 1 2 10 12 \n"
    )
    for n in (1, 2):
        write_jpeg(tmp_path / "val" / f"ILSVRC2012_val_{n:08d}.JPEG")
    ds = read_ilsvrc2012_val(tmp_path / "val", solution_csv=tmp_path / "LOC_val_solution.csv", allowed_roots=[tmp_path])
    assert [s.label for s in ds] == [2, 1]
    second = ds[1]
    assert [o.box for o in second.objects] == [(5, 6, 21, 26), (0, 0, 4, 5)]
    assert second.class_mask(1).sum() == 16 * 20 + 4 * 5


def test_ilsvrc_class_folders_with_a_synset_list(tmp_path):
    (tmp_path / "map.txt").write_text("n01000000 alpha\nn02000000 beta\nn03000000 gamma\n")
    write_jpeg(tmp_path / "val" / "n02000000" / "ILSVRC2012_val_00000007.JPEG")
    write_jpeg(tmp_path / "val" / "n03000000" / "ILSVRC2012_val_00000003.JPEG")
    ds = read_ilsvrc2012_val(tmp_path / "val", synsets=tmp_path / "map.txt", allowed_roots=[tmp_path])
    assert [(s.key[-2:], s.label) for s in ds] == [("03", 2), ("07", 1)]
    with pytest.raises(DatasetFormatError, match="1000"):
        read_ilsvrc2012_val(tmp_path / "val", allowed_roots=[tmp_path])


def test_ilsvrc_bad_ground_truth_is_reported_with_its_line(tmp_path):
    devkit = write_devkit(tmp_path)
    (devkit / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n4\n")  # 4 is not a leaf
    write_jpeg(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DatasetFormatError, match="line 2 of ILSVRC2012_validation_ground_truth.txt"):
        read_ilsvrc2012_val(tmp_path / "val", devkit=devkit, allowed_roots=[tmp_path])


# ----------------------------------------------------------------------------- roots

def test_paths_outside_the_data_roots_are_refused(tmp_path):
    inside, outside = tmp_path / "data", tmp_path / "elsewhere"
    inside.mkdir()
    outside.mkdir()
    with pytest.raises(PathNotAllowed, match="DATA_ROOTS"):
        read_voc2007(outside, allowed_roots=[inside])
    with pytest.raises(PathNotAllowed):
        read_voc2007(inside / ".." / "elsewhere", allowed_roots=[inside])
    os.symlink(outside, inside / "link")
    with pytest.raises(PathNotAllowed):
        check_path(inside / "link", [inside])
    with pytest.raises(PathNotAllowed):
        check_path(inside, [])
    with pytest.raises(TypeError, match="allowed_roots"):
        check_path(inside, None)
    assert check_path(inside / "x", [str(inside)]) == (inside / "x").resolve()


# ----------------------------------------------------------------------------- VOC

VOC_XML = """<annotation><filename>{id}.jpg</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
VOC_OBJ = """<object><name>{name}</name><pose>Left</pose><truncated>0</truncated><difficult>{d}</difficult>
<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"""


def write_voc(root):
    base = root / "VOCdevkit" / "VOC2007"
    (base / "Annotations").mkdir(parents=True)
    (base / "ImageSets" / "Main").mkdir(parents=True)
    images = {
        "000001": (50, 40, [("dog", 0, 1, 1, 10, 20), ("person", 1, 5, 5, 6, 6)]),
        "000004": (60, 30, [("tvmonitor", 0, 2, 3, 4, 5), ("aeroplane", 0, 1, 1, 60, 30)]),
    }
    for image_id, (w, h, objects) in images.items():
        body = "".join(VOC_OBJ.format(name=n, d=d, x0=a, y0=b, x1=c, y1=e) for n, d, a, b, c, e in objects)
        (base / "Annotations" / f"{image_id}.xml").write_text(VOC_XML.format(id=image_id, w=w, h=h, objects=body))
        write_jpeg(base / "JPEGImages" / f"{image_id}.jpg", w, h)
    (base / "ImageSets" / "Main" / "test.txt").write_text("000001\n000004\n")
    return root / "VOCdevkit"


def test_voc_reads_labels_boxes_and_difficult_flags(tmp_path):
    ds = read_voc2007(write_voc(tmp_path), allowed_roots=[tmp_path])
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[11] == "dog" and VOC_CLASSES[-1] == "tvmonitor"
    first, second = ds
    assert first.key == "000001" and first.size == (50, 40)
    assert first.labels == (11, 14) and second.labels == (0, 19)
    dog, person = first.objects
    assert dog.box == (0, 0, 10, 20) and not dog.difficult and person.difficult
    mask = first.class_mask(11)
    assert mask.shape == (40, 50) and mask.sum() == 10 * 20 and mask[19, 9] and not mask[20, 9]
    assert first.class_mask(14).sum() == 4  # 1-based inclusive 5..6 → pixels 4 and 5
    assert second.class_mask(0).all()
    assert ds[1].load_image().size == (60, 30)


def test_voc_missing_files_are_clear_errors(tmp_path):
    with pytest.raises(DatasetFormatError, match="test.txt"):
        read_voc2007(tmp_path, allowed_roots=[tmp_path])
    root = write_voc(tmp_path)
    (root / "VOC2007" / "Annotations" / "000004.xml").unlink()
    with pytest.raises(DatasetFormatError, match="no XML for the image on line 2 of ImageSets/Main/test.txt"):
        read_voc2007(root, allowed_roots=[tmp_path])


# ----------------------------------------------------------------------------- COCO

def write_coco(root):
    rle = mask_utils.encode(np.asfortranarray(box_mask((2, 3, 6, 8), 20, 30).astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    data = {
        "images": [
            {"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "width": 30, "height": 20},
            {"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "width": 30, "height": 20},
            {"id": 9, "file_name": "COCO_val2014_000000000009.jpg", "width": 30, "height": 20},
        ],
        "categories": [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 3, "iscrowd": 0, "area": 50.0, "bbox": [10, 5, 10, 5],
             "segmentation": [[10, 5, 20, 5, 20, 10, 10, 10]]},
            {"id": 2, "image_id": 42, "category_id": 90, "iscrowd": 1, "area": 20.0, "bbox": [2, 3, 4, 5],
             "segmentation": rle},
            {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": 4.0, "bbox": [0, 0, 2, 2],
             "segmentation": [[0, 0, 2, 0, 2, 2, 0, 2]]},
        ],
    }
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(data))
    for image in data["images"]:
        write_jpeg(root / "val2014" / image["file_name"], 30, 20)
    return root / "val2014", root / "annotations" / "instances_val2014.json"


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools with NumPy 2
def test_coco_categories_in_sorted_id_order_and_masks_from_polygons_and_rle(tmp_path):
    images, annotations = write_coco(tmp_path)
    ds = read_coco2014_val(images, annotations, allowed_roots=[tmp_path])
    assert ds.class_names == ("person", "car", "toothbrush")
    assert [s.key for s in ds] == ["COCO_val2014_000000000007", "COCO_val2014_000000000042"]  # 9 has no annotation
    sample = ds[1]
    assert sample.labels == (1, 2) and sample.size == (30, 20)
    assert np.array_equal(sample.class_mask(2), box_mask((2, 3, 6, 8), 20, 30))  # the RLE, decoded
    car = sample.class_mask(1)
    assert car.shape == (20, 30) and car[7, 15] and not car[2, 15] and not car[7, 5]
    assert abs(int(car.sum()) - 50) <= 16  # rasterised polygon ≈ its 10×5 area
    assert sample.objects[0].box == (10, 5, 20, 10)
    assert len(read_coco2014_val(images, annotations, allowed_roots=[tmp_path], with_empty=True)) == 3


# ----------------------------------------------------------------------------- ImageNet-Segmentation

def write_gtsegs(path, images, masks):
    """The MATLAB v7.3 layout: a 512-byte user block, /value/img → refs, /value/gt → refs to 1×1 cells of refs."""
    with h5py.File(path, "w", userblock_size=512) as f:
        refs = f.create_group("#refs#")
        ref_dtype = h5py.special_dtype(ref=h5py.Reference)
        img_refs = np.empty((len(images), 1), dtype=object)
        gt_refs = np.empty((len(images), 1), dtype=object)
        for i, (image, mask) in enumerate(zip(images, masks)):
            img = refs.create_dataset(f"img{i}", data=image.transpose(2, 1, 0))  # H×W×3 → 3×W×H (column-major)
            gt = refs.create_dataset(f"gt{i}", data=mask.T.astype(np.uint8))
            cell = refs.create_dataset(f"cell{i}", shape=(1, 1), dtype=ref_dtype)
            cell[0, 0] = gt.ref
            img_refs[i, 0], gt_refs[i, 0] = img.ref, cell.ref
        value = f.create_group("value")
        value.create_dataset("img", data=img_refs, dtype=ref_dtype)
        value.create_dataset("gt", data=gt_refs, dtype=ref_dtype)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64")


def test_imagenet_segmentation_reads_matlab_layout_and_transposes(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (30, 45, 3), dtype=np.uint8), rng.integers(0, 255, (50, 20, 3), dtype=np.uint8)]
    masks = [rng.random((30, 45)) > 0.5, np.zeros((50, 20), bool)]
    masks[1][10:20, 5:8] = True
    write_gtsegs(tmp_path / "gtsegs_ijcv.mat", images, masks)
    ds = read_imagenet_segmentation(tmp_path / "gtsegs_ijcv.mat", allowed_roots=[tmp_path])
    assert len(ds) == 2
    for sample, image, mask in zip(ds, images, masks):
        assert np.array_equal(np.asarray(sample.load_image()), image)
        assert np.array_equal(sample.foreground_mask(), mask)
    small = preprocess_mask(ds[1].foreground_mask(), get_protocol("chefer-segmentation-v1").preprocessing)
    assert small.shape == (224, 224) and set(np.unique(small)) == {False, True}


def test_imagenet_segmentation_wrong_file_is_a_clear_error(tmp_path):
    (tmp_path / "gtsegs_ijcv.mat").write_bytes(b"not hdf5")
    with pytest.raises(DatasetFormatError, match="HDF5"):
        read_imagenet_segmentation(tmp_path / "gtsegs_ijcv.mat", allowed_roots=[tmp_path])


# ----------------------------------------------------------------------------- subsets

def test_subsets_first_and_seeded_random(tmp_path):
    devkit = write_devkit(tmp_path)
    (devkit / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("1\n2\n3\n" * 4)
    for n in range(1, 13):
        write_jpeg(tmp_path / "val" / f"ILSVRC2012_val_{n:08d}.JPEG")
    ds = read_ilsvrc2012_val(tmp_path / "val", devkit=devkit, allowed_roots=[tmp_path])
    first = ds.subset(first=3)
    assert [s.key[-2:] for s in first] == ["01", "02", "03"] and first.selection == "first 3"
    a, b, c = ds.subset(random=5, seed=1), ds.subset(random=5, seed=1), ds.subset(random=5, seed=2)
    assert [s.key for s in a] == [s.key for s in b] != [s.key for s in c]
    assert [s.key for s in a] == sorted(s.key for s in a)
    assert a.describe()["selection"] == "random 5 (seed 1)" and a.describe()["num_images"] == 5
    assert ds.subset(first=6).subset(random=2, seed=0).selection == "first 6, then random 2 (seed 0)"
    with pytest.raises(ValueError):
        ds.subset(first=13)
    with pytest.raises(ValueError):
        ds.subset(first=2, random=2)


def test_ilsvrc_full_class_list_uses_torchvision_names(tmp_path):
    from torchvision.models import ResNet18_Weights

    wnids = [f"n{10_000_000 + 7 * i:08d}" for i in range(1000)]
    lines = [f"{w} synonym {i}, other" for i, w in enumerate(reversed(wnids))]  # file order ≠ sorted order
    (tmp_path / "LOC_synset_mapping.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "LOC_val_solution.csv").write_text(f"ImageId,PredictionString\nILSVRC2012_val_00000001,{wnids[5]} 0 0 1 1\n")
    write_jpeg(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    ds = read_ilsvrc2012_val(tmp_path / "val", solution_csv=tmp_path / "LOC_val_solution.csv", allowed_roots=[tmp_path])
    assert ds.class_names == tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    assert ds[0].label == 5 and ds.extra["wnids"][5] == wnids[5]
    assert ds.extra["words"][5] == "synonym 994, other"
