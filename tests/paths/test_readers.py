"""Every file a data-set reader opens must really lie in the data roots: symbolic links (to files
or folders) that lead out are refused when the set is listed and again when a file is opened;
option values are names, not paths; errors never quote what a file holds. No database."""
from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from PIL import Image

from experiments.core.datasets import (
    DatasetFormatError,
    PathNotAllowed,
    read_coco2014_val,
    read_ilsvrc2012_val,
    read_imagenet_segmentation,
    read_voc2007,
)
from tests.experiments_core.test_datasets import (
    write_coco,
    write_devkit,
    write_jpeg,
    write_voc,
)

SECRET = "SECRET_TOKEN_4711"


@pytest.fixture
def tree(tmp_path):
    """``data`` (the only data root) and ``outside`` (a folder with a secret image and text)."""
    data, outside = tmp_path / "data", tmp_path / "outside"
    data.mkdir()
    outside.mkdir()
    write_jpeg(outside / "private.jpg", 50, 40, value=7)
    (outside / "secret.txt").write_text(f"{SECRET} more\n")
    return data, outside


def _no_leak(error, outside):
    text = str(error.value)
    assert SECRET not in text and str(outside) not in text, text


# ----------------------------------------------------------------------------- VOC

def test_voc_image_linked_outside_is_refused_at_listing(tree):
    data, outside = tree
    root = write_voc(data)
    image = root / "VOC2007" / "JPEGImages" / "000001.jpg"
    image.unlink()
    image.symlink_to(outside / "private.jpg")
    with pytest.raises(PathNotAllowed, match="JPEGImages/000001.jpg links outside") as error:
        read_voc2007(root, allowed_roots=[data])
    _no_leak(error, outside)


def test_voc_image_folder_linked_outside_is_refused(tree):
    data, outside = tree
    root = write_voc(data)
    images = root / "VOC2007" / "JPEGImages"
    for name in ("000001.jpg", "000004.jpg"):
        os.replace(images / name, outside / name)
    images.rmdir()
    images.symlink_to(outside)
    with pytest.raises(PathNotAllowed, match="links outside"):
        read_voc2007(root, allowed_roots=[data])


def test_voc_annotation_and_image_set_linked_outside_are_refused(tree):
    data, outside = tree
    root = write_voc(data)
    xml = root / "VOC2007" / "Annotations" / "000004.xml"
    (outside / "000004.xml").write_text(xml.read_text())
    xml.unlink()
    xml.symlink_to(outside / "000004.xml")
    with pytest.raises(PathNotAllowed, match="Annotations/000004.xml links outside"):
        read_voc2007(root, allowed_roots=[data])
    xml.unlink()
    xml.write_text((outside / "000004.xml").read_text())
    listing = root / "VOC2007" / "ImageSets" / "Main" / "val.txt"
    listing.symlink_to(outside / "secret.txt")
    with pytest.raises(PathNotAllowed) as error:
        read_voc2007(root, allowed_roots=[data], image_set="val")
    _no_leak(error, outside)


def test_voc_link_swapped_after_listing_is_refused_at_open(tree):
    data, outside = tree
    root = write_voc(data)
    dataset = read_voc2007(root, allowed_roots=[data])
    assert dataset[0].load_image().size == (50, 40)
    image = root / "VOC2007" / "JPEGImages" / "000001.jpg"
    image.unlink()
    image.symlink_to(outside / "private.jpg")
    with pytest.raises(PathNotAllowed, match="JPEGImages/000001.jpg links outside") as error:
        dataset[0].load_image()
    _no_leak(error, outside)


def test_voc_links_inside_the_roots_are_fine(tree):
    data, _ = tree
    root = write_voc(data)
    write_jpeg(data / "shared" / "a.jpg", 50, 40, value=200)
    image = root / "VOC2007" / "JPEGImages" / "000001.jpg"
    image.unlink()
    image.symlink_to(data / "shared" / "a.jpg")
    dataset = read_voc2007(root, allowed_roots=[data])
    assert dataset[0].load_image().getpixel((0, 0)) == (200, 200, 200)


@pytest.mark.parametrize("image_set", ["../../outside/secret", "/etc/passwd", "test.txt", "a b", "", "x" * 65, 3])
def test_voc_image_set_must_be_a_name(tree, image_set):
    data, outside = tree
    root = write_voc(data)
    with pytest.raises(ValueError, match="image_set must be a name") as error:
        read_voc2007(root, allowed_roots=[data], image_set=image_set)
    _no_leak(error, outside)


def test_voc_errors_name_the_line_and_never_quote_the_file(tree):
    data, _ = tree
    root = write_voc(data)
    listing = root / "VOC2007" / "ImageSets" / "Main" / "test.txt"
    listing.write_text(f"000001\n../../{SECRET}\n")
    with pytest.raises(DatasetFormatError, match="line 2 of ImageSets/Main/test.txt is not a valid VOC image id") as error:
        read_voc2007(root, allowed_roots=[data])
    assert SECRET not in str(error.value)
    listing.write_text("000001\n")
    xml = root / "VOC2007" / "Annotations" / "000001.xml"
    xml.write_text(xml.read_text().replace("<name>dog</name>", f"<name>{SECRET}</name>"))
    with pytest.raises(DatasetFormatError, match="Annotations/000001.xml: object 1 is not of one of the 20") as error:
        read_voc2007(root, allowed_roots=[data])
    assert SECRET not in str(error.value)
    xml.write_text(f"<annotation>{SECRET}")
    with pytest.raises(DatasetFormatError, match="not valid XML") as error:
        read_voc2007(root, allowed_roots=[data])
    assert SECRET not in str(error.value)


# ----------------------------------------------------------------------------- COCO

def test_coco_image_linked_outside_or_named_outside_is_refused(tree):
    data, outside = tree
    images, annotations = write_coco(data)
    linked = images / "COCO_val2014_000000000042.jpg"
    linked.unlink()
    linked.symlink_to(outside / "private.jpg")
    with pytest.raises(PathNotAllowed, match="COCO_val2014_000000000042.jpg links outside") as error:
        read_coco2014_val(images, annotations, allowed_roots=[data])
    _no_leak(error, outside)
    linked.unlink()
    write_jpeg(linked, 30, 20)
    content = json.loads(annotations.read_text())
    content["images"][0]["file_name"] = "../../outside/private.jpg"
    annotations.write_text(json.dumps(content))
    with pytest.raises(PathNotAllowed, match="links outside") as error:
        read_coco2014_val(images, annotations, allowed_roots=[data])
    _no_leak(error, outside)


def test_coco_swap_after_listing_and_content_not_quoted(tree):
    data, outside = tree
    images, annotations = write_coco(data)
    dataset = read_coco2014_val(images, annotations, allowed_roots=[data])
    target = images / dataset[0].path.rsplit("/", 1)[1]
    target.unlink()
    target.symlink_to(outside / "private.jpg")
    with pytest.raises(PathNotAllowed):
        dataset[0].load_image()
    annotations.write_text('{"images": [], "categories": [' + SECRET)
    with pytest.raises(DatasetFormatError, match="is not JSON") as error:
        read_coco2014_val(images, annotations, allowed_roots=[data])
    assert SECRET not in str(error.value)


# ----------------------------------------------------------------------------- ILSVRC

def test_ilsvrc_image_and_class_folder_linked_outside_are_refused(tree):
    data, outside = tree
    devkit = write_devkit(data)
    for n in (1, 2):
        write_jpeg(data / "val" / f"ILSVRC2012_val_{n:08d}.JPEG")
    (data / "val" / "ILSVRC2012_val_00000003.JPEG").symlink_to(outside / "private.jpg")
    with pytest.raises(PathNotAllowed, match="ILSVRC2012_val_00000003.JPEG links outside") as error:
        read_ilsvrc2012_val(data / "val", devkit=devkit, allowed_roots=[data])
    _no_leak(error, outside)

    (data / "classes" / "n01000000").mkdir(parents=True)
    write_jpeg(data / "classes" / "n01000000" / "ILSVRC2012_val_00000001.JPEG")
    write_jpeg(outside / "n02000000" / "ILSVRC2012_val_00000002.JPEG")
    (data / "classes" / "n02000000").symlink_to(outside / "n02000000")
    (data / "synsets.txt").write_text("n01000000 alpha\nn02000000 beta\n")
    with pytest.raises(PathNotAllowed, match="n02000000 links outside"):
        read_ilsvrc2012_val(data / "classes", synsets=data / "synsets.txt", allowed_roots=[data])


def test_ilsvrc_devkit_files_linked_outside_are_refused(tree):
    data, outside = tree
    devkit = write_devkit(data)
    write_jpeg(data / "val" / "ILSVRC2012_val_00000001.JPEG")
    truth = devkit / "data" / "ILSVRC2012_validation_ground_truth.txt"
    truth.unlink()
    truth.symlink_to(outside / "secret.txt")
    with pytest.raises(PathNotAllowed, match="links outside") as error:
        read_ilsvrc2012_val(data / "val", devkit=devkit, allowed_roots=[data])
    _no_leak(error, outside)


def test_ilsvrc_swap_after_listing_is_refused_at_open(tree):
    data, outside = tree
    devkit = write_devkit(data)
    write_jpeg(data / "val" / "ILSVRC2012_val_00000001.JPEG")
    dataset = read_ilsvrc2012_val(data / "val", devkit=devkit, allowed_roots=[data])
    (data / "val" / "ILSVRC2012_val_00000001.JPEG").unlink()
    (data / "val" / "ILSVRC2012_val_00000001.JPEG").symlink_to(outside / "private.jpg")
    with pytest.raises(PathNotAllowed):
        dataset[0].load_image()
    with pytest.raises(PathNotAllowed):
        dataset[0].class_mask(0)  # the size is read from the file: same check


def test_ilsvrc_errors_name_the_line_and_never_quote_the_file(tree):
    data, _ = tree
    write_jpeg(data / "val" / "n01000000" / "ILSVRC2012_val_00000001.JPEG")
    (data / "synsets.txt").write_text(f"n01000000 alpha\n{SECRET} words\n")
    with pytest.raises(DatasetFormatError, match="line 2 of synsets.txt is not a valid") as error:
        read_ilsvrc2012_val(data / "val", synsets=data / "synsets.txt", allowed_roots=[data])
    assert SECRET not in str(error.value)
    (data / "LOC_synset_mapping.txt").write_text("n01000000 alpha\n")
    (data / "LOC_val_solution.csv").write_text(f"ImageId,PredictionString\nILSVRC2012_val_00000001,{SECRET} 1 2 3 4\n")
    with pytest.raises(DatasetFormatError, match="line 2 of LOC_val_solution.csv") as error:
        read_ilsvrc2012_val(data / "val", solution_csv=data / "LOC_val_solution.csv", allowed_roots=[data])
    assert SECRET not in str(error.value)
    devkit = write_devkit(data / "kit")
    (devkit / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text(f"1\n{SECRET}\n")
    with pytest.raises(DatasetFormatError, match="line 2 of ILSVRC2012_validation_ground_truth.txt") as error:
        read_ilsvrc2012_val(data / "val", devkit=devkit, allowed_roots=[data])
    assert SECRET not in str(error.value)


# ----------------------------------------------------------------------------- ImageNet-Segmentation

def _write_mat(path, value=10):
    with h5py.File(path, "w") as f:
        image = f.create_dataset("refs/img0", data=np.full((3, 6, 4), value, np.uint8))
        mask = f.create_dataset("refs/mask0", data=np.ones((6, 4), np.uint8))
        cell = f.create_dataset("refs/cell0", data=np.array([[mask.ref]], dtype=h5py.ref_dtype))
        f.create_dataset("value/img", data=np.array([[image.ref]], dtype=h5py.ref_dtype))
        f.create_dataset("value/gt", data=np.array([[cell.ref]], dtype=h5py.ref_dtype))


def test_imagenet_segmentation_file_swapped_after_listing_is_refused(tree):
    data, outside = tree
    _write_mat(data / "gtsegs_ijcv.mat")
    _write_mat(outside / "other.mat", value=99)
    dataset = read_imagenet_segmentation(data / "gtsegs_ijcv.mat", allowed_roots=[data])
    assert dataset[0].load_image().getpixel((0, 0)) == (10, 10, 10)
    (data / "gtsegs_ijcv.mat").unlink()
    (data / "gtsegs_ijcv.mat").symlink_to(outside / "other.mat")
    with pytest.raises(PathNotAllowed):
        dataset[0].load_image()
    with pytest.raises(PathNotAllowed):
        dataset[0].foreground_mask()
    with pytest.raises(PathNotAllowed):
        read_imagenet_segmentation(data / "gtsegs_ijcv.mat", allowed_roots=[data])


def test_an_image_read_through_a_link_inside_the_roots_is_the_linked_one(tree):
    data, _ = tree
    Image.new("RGB", (5, 5), (1, 2, 3)).save(data / "real.png")
    (data / "alias.png").symlink_to(data / "real.png")
    from experiments.core.datasets import open_checked

    with open_checked(data / "alias.png", [data]) as f, Image.open(f) as image:
        assert image.getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(DatasetFormatError, match="missing.png does not exist"):
        open_checked(data / "missing.png", [data])
