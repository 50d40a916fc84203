"""The image-folder reader: PNGs of two sizes (and a grey one), resized and centre-cropped exactly as
torchvision's Resize + CenterCrop do (the independent reference), classes from the folder names."""

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import write_image_folder
from torchvision import transforms

from shiftprobe.data.folder import FolderDataset, ImageFileError, class_names, load_image, scan_split
from shiftprobe.errors import ShiftProbeError


def reference(path, size: int, mode: str) -> torch.Tensor:
    """torchvision's own pipeline: Resize(size) (shorter side), CenterCrop(size), PILToTensor."""
    pipeline = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size), transforms.PILToTensor()])
    with Image.open(path) as img:
        return pipeline(img.convert(mode))


@pytest.mark.parametrize("size", [16, 21, 30])
@pytest.mark.parametrize("channels", [3, 1])
def test_images_equal_torchvision_resize_and_centre_crop(tmp_path, size, channels):
    written = write_image_folder(tmp_path)
    for path, _ in written["train"][:2] + written["test"][:1]:  # both sizes, and a grey PNG
        image = load_image(str(path), size, channels)
        assert image.dtype == torch.uint8 and image.shape == (channels, size, size) and image.is_contiguous()
        assert torch.equal(image, reference(path, size, "RGB" if channels == 3 else "L"))


def test_classes_are_sorted_folder_names_and_test_uses_train_classes(tmp_path):
    written = write_image_folder(tmp_path, classes=("zebra", "ant", "moth"))
    classes = class_names(tmp_path / "train")
    assert classes == ["ant", "moth", "zebra"]
    paths, labels = scan_split(tmp_path, "test", classes)
    assert len(paths) == len(written["test"]) == 6
    for path, label in zip(paths, labels, strict=True):
        assert classes[label] == path.split("/")[-2]
    (tmp_path / "test" / "yak").mkdir()
    (tmp_path / "test" / "yak" / "a.png").write_bytes((tmp_path / "test" / "ant" / "000.png").read_bytes())
    with pytest.raises(ShiftProbeError, match=r"class folder\(s\) \['yak'\]"):
        scan_split(tmp_path, "test", classes)


def test_dataset_batches_and_subsets(tmp_path):
    written = write_image_folder(tmp_path)
    paths, labels = scan_split(tmp_path, "train", class_names(tmp_path / "train"))
    ds = FolderDataset(paths, labels, image_size=12, channels=3)
    images, batch_labels = ds.__getitems__(torch.tensor([5, 0, 11]))
    assert images.shape == (3, 3, 12, 12) and images.dtype == torch.uint8
    assert batch_labels.tolist() == [written["train"][i][1] for i in (5, 0, 11)]
    assert torch.equal(images[1], load_image(paths[0], 12, 3))
    sub = ds.subset(torch.tensor([11, 5]))
    assert len(sub) == 2 and torch.equal(sub.__getitems__([0])[0][0], images[2])
    everything, all_labels = ds.read_all(batch_size=5, num_workers=0)
    assert everything.shape == (12, 3, 12, 12) and torch.equal(everything[5], images[0])
    assert all_labels.tolist() == labels


@pytest.mark.parametrize("num_workers", [0, 1])
def test_unreadable_image_is_one_line_even_from_a_worker(tmp_path, num_workers):
    write_image_folder(tmp_path, n_train=1, n_test=1)
    bad = tmp_path / "test" / "dog" / "000.png"
    bad.write_bytes(b"not a png")
    paths, labels = scan_split(tmp_path, "test", class_names(tmp_path / "train"))
    with pytest.raises(ImageFileError) as err:
        FolderDataset(paths, labels, 8, 3).read_all(batch_size=2, num_workers=num_workers)
    msg = str(err.value)
    assert msg.startswith(f"image file {bad} cannot be read") and len(msg.splitlines()) == 1


def test_a_split_without_images(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "train" / "a" / "notes.txt").write_text("x")
    with pytest.raises(ShiftProbeError, match="holds no images"):
        scan_split(tmp_path, "train", ["a"])


@pytest.mark.parametrize("channels", [1, 3])
def test_a_16_bit_grey_png_keeps_its_levels(tmp_path, channels):
    """PIL's convert clips a 16-bit grey PNG (mode I;16) to 255 above level 255: an image of mid greys
    read as white. Its 8-bit pixels are the high bytes, as PIL reads a 16-bit RGB PNG."""
    levels = np.arange(0, 65536, 256, dtype=np.uint16).reshape(16, 16) + 255
    path = tmp_path / "deep.png"
    Image.fromarray(levels).save(path)
    with Image.open(path) as img:
        assert img.mode == "I;16"
    expected = torch.from_numpy((levels >> 8).astype(np.uint8))
    assert torch.equal(load_image(str(path), 16, channels), expected.expand(channels, 16, 16))


def test_a_palette_png_with_transparency_reads_without_a_warning(tmp_path):
    """PIL warns "Palette images with Transparency expressed in bytes should be converted to RGBA images"
    on every such PNG, which the user cannot act on; read through RGBA, the pixels are the same."""
    import warnings

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8), "RGB").convert("P")
    path = tmp_path / "palette.png"
    img.save(path, transparency=bytes([0] * 10 + [255] * 246))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = [reference(path, 16, mode) for mode in ("RGB", "L")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(load_image(str(path), 16, 3), expected[0])
        assert torch.equal(load_image(str(path), 16, 1), expected[1])
