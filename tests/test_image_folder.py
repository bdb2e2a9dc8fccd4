"""bench.core.image_folder (``data=image_folder`` / ``data=imagenet``): layouts, shapes, labels, pixel values
against PIL and torchvision, the seeded split, grey mode, resizing, and clear errors. Folders are generated per test
(tests/image_fixtures.py); no network, no training beyond a few steps on 24 tiny images."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.core.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetNotFoundError,
    ImageFolderError,
    load_dataset,
    names,
)
from bench.core.image_folder import image_folder
from tests.image_fixtures import CLASSES, make_image_folder


@pytest.fixture
def split_folder(tmp_path):
    """``pets/train/<class>`` and ``pets/val/<class>``: 12 RGB PNGs of 16 x 16 per class and split."""
    return make_image_folder(tmp_path / "pets", splits=("train", "val"))


@pytest.fixture
def single_folder(tmp_path):
    """``flat/<class>``: 20 RGB PNGs of 16 x 16 per class, split by the harness."""
    return make_image_folder(tmp_path / "flat", splits=None, per_class=20)


def _pil(path: Path, mode: str = "RGB") -> torch.Tensor:
    arr = np.asarray(Image.open(path).convert(mode), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.reshape(arr.shape[0], arr.shape[1], -1)).permute(2, 0, 1)


def test_split_layout_shapes_labels_and_domain(split_folder):
    d = image_folder(split_folder)
    assert d.name == "image_folder:pets" and d.num_classes == 2
    assert d.x_train.shape == (24, 3, 16, 16) and d.x_test.shape == (24, 3, 16, 16)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.domain == (0.0, 1.0) and 0.0 <= float(d.x_test.min()) and float(d.x_test.max()) <= 1.0
    assert d.meta["classes"] == sorted(CLASSES) and d.meta["class_to_idx"] == {"circles": 0, "stripes": 1}
    assert torch.bincount(d.y_train).tolist() == [12, 12] and torch.bincount(d.y_test).tolist() == [12, 12]
    assert len(torch.unique(d.y_test[:6])) == 2  # a seeded order: the first test samples mix the classes
    # every sample is its file, decoded as PIL does, under its folder's label
    for split, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
        files = d.meta[f"files_{split}"]
        assert len(files) == len(x) and files[0].startswith("train/" if split == "train" else "val/")
        for i in (0, 5, len(files) - 1):
            assert Path(files[i]).parent.name == d.meta["classes"][int(y[i])]
            assert torch.equal(x[i], _pil(split_folder / files[i]))


def test_test_folder_is_accepted_and_val_alone_is_evaluation_only(tmp_path):
    d = image_folder(make_image_folder(tmp_path / "a", splits=("train", "test"), per_class=3))
    assert len(d.x_train) == 6 and len(d.x_test) == 6
    d = image_folder(make_image_folder(tmp_path / "b", splits=("val",), per_class=3))
    assert d.x_train.shape == (0, 3, 16, 16) and d.y_train.shape == (0,) and d.input_shape == (3, 16, 16)
    assert d.x_test.shape == (6, 3, 16, 16)
    assert "evaluation" in d.meta["layout"] and len(d.fingerprint()) == 16


def test_single_folder_split_is_seeded_stratified_and_exact(single_folder):
    a, b = image_folder(single_folder, seed=0), image_folder(single_folder, seed=0)
    assert torch.equal(a.x_test, b.x_test) and a.meta["files_test"] == b.meta["files_test"]
    assert len(a.x_test) == 8 and torch.bincount(a.y_test).tolist() == [4, 4]  # default: a fifth
    c = image_folder(single_folder, seed=1)
    assert c.meta["files_test"] != a.meta["files_test"]
    assert not set(a.meta["files_test"]) & set(a.meta["files_train"])
    assert len(set(a.meta["files_test"]) | set(a.meta["files_train"])) == 40
    d = image_folder(single_folder, n_test=5)
    assert len(d.x_test) == 5 and len(d.x_train) == 35 and set(d.y_test.tolist()) == {0, 1}
    assert len(image_folder(single_folder, test_fraction=0.5).x_test) == 20


def test_single_folder_all_test_is_evaluation_only(single_folder):
    d = image_folder(single_folder, n_test=40)
    assert d.x_train.shape == (0, 3, 16, 16) and len(d.x_test) == 40
    assert len(image_folder(single_folder, test_fraction=1.0).x_test) == 40


@pytest.mark.parametrize("n_test", [1, 0, -3, 39, 41])
def test_single_folder_bad_n_test_names_value_set_and_range(single_folder, n_test):
    with pytest.raises(ValueError) as err:
        image_folder(single_folder, n_test=n_test)
    msg = str(err.value)
    assert f"data.n_test={n_test}" in msg and "'image_folder'" in msg and "2 to 38" in msg and "or 40" in msg


def test_grey_mode_is_pils_luma(split_folder):
    d = image_folder(split_folder, grey=True)
    assert d.x_train.shape == (24, 1, 16, 16) and d.input_shape == (1, 16, 16)
    f = d.meta["files_test"][3]
    assert torch.equal(d.x_test[3], _pil(split_folder / f, "L"))


def test_resize_and_center_crop_match_torchvision(tmp_path):
    import torchvision.transforms.functional as TF

    root = make_image_folder(tmp_path / "mixed", splits=None, per_class=4, size=[(20, 16), (16, 27), (31, 31)])
    d = image_folder(root, size=8, n_test=4)
    assert d.x_train.shape == (4, 3, 8, 8) and d.x_test.shape == (4, 3, 8, 8)
    d2 = image_folder(root, size=8, resize=12, n_test=4)
    for data, resize in ((d, 8), (d2, 12)):
        for i, f in enumerate(data.meta["files_test"]):
            ref = TF.center_crop(TF.resize(Image.open(root / f).convert("RGB"), resize), 8)
            assert torch.equal(data.x_test[i], TF.to_tensor(ref)), f


def test_mixed_sizes_without_size_name_two_files(tmp_path):
    root = make_image_folder(tmp_path / "mixed", splits=None, per_class=4, size=[(16, 16), (20, 16)])
    with pytest.raises(ImageFolderError, match=r"img_\d+\.png is \(\d+, 16\).*img_\d+\.png is \(\d+, 16\).*data\.size"):
        image_folder(root, n_test=4)


def test_jpeg_files_any_case_and_max_per_class(tmp_path):
    root = make_image_folder(tmp_path / "j", splits=("train", "val"), per_class=5, ext=".JPEG")
    (root / "train" / "circles" / "notes.txt").write_text("not an image")
    (root / "train" / "circles" / ".hidden.png").write_bytes(b"junk")
    d = image_folder(root)
    assert len(d.x_train) == 10 and len(d.x_test) == 10
    d = image_folder(root, max_per_class=2)
    assert torch.bincount(d.y_train).tolist() == [2, 2] and len(d.x_test) == 4
    assert sorted(Path(f).name for f in d.meta["files_train"]) == ["img_000.JPEG"] * 2 + ["img_001.JPEG"] * 2


@pytest.mark.parametrize("encoding, low, high", [("negative", -1.0, 0.0), ("symmetric", -1.0, 1.0)])
def test_encoding_applies(split_folder, encoding, low, high):
    unit, enc = image_folder(split_folder), image_folder(split_folder, encoding=encoding)
    assert enc.domain == (low, high) and enc.encoding == encoding
    torch.testing.assert_close(enc.x_test, unit.x_test * (high - low) + low)


def test_load_dataset_names_and_mean_std(split_folder):
    assert {"image_folder", "imagenet"} <= set(names())
    d = load_dataset("image_folder", root=split_folder, size=8, mean=[0.5, 0.4, 0.3], std=[0.2, 0.2, 0.2])
    assert d.x_train.shape == (24, 3, 8, 8) and d.meta["mean"] == [0.5, 0.4, 0.3] and d.meta["std"] == [0.2] * 3
    with pytest.raises(ValueError, match="3 channel"):
        load_dataset("image_folder", root=split_folder, mean=[0.5, 0.5], std=[0.2, 0.2])
    with pytest.raises(ValueError, match="both"):
        load_dataset("image_folder", root=split_folder, mean=[0.5])


def test_a_small_model_learns_the_fixture(split_folder):
    from bench.core.models import create_model

    d = image_folder(split_folder, size=8)
    torch.manual_seed(0)
    model = create_model("paper_mlp", d.input_shape, d.num_classes, hidden=16, depth=1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(40):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(d.x_train), d.y_train).backward()
        opt.step()
    assert float((model(d.x_test).argmax(1) == d.y_test).float().mean()) == 1.0


# ------------------------------------------------------------------------------------------------- imagenet


def test_imagenet_preset_labels_by_wnid_and_carries_the_statistics(tmp_path):
    root = make_image_folder(tmp_path / "val", splits=None, classes=("n01443537", "n01440764"), per_class=3,
                             size=(20, 24), ext=".JPEG")
    d = load_dataset("imagenet", root=root, size=16)
    assert d.name == "imagenet" and d.num_classes == 1000
    assert d.x_train.shape == (0, 3, 16, 16) and d.x_test.shape == (6, 3, 16, 16)  # every image a test sample
    assert sorted(set(d.y_test.tolist())) == [0, 1]  # n01440764 (tench) is class 0 of ImageNet
    for f, y in zip(d.meta["files_test"], d.y_test.tolist(), strict=True):
        assert Path(f).parent.name == d.meta["classes"][y]
    assert d.meta["mean"] == list(IMAGENET_MEAN) and d.meta["std"] == list(IMAGENET_STD)
    assert d.meta["size"] == 16  # resized to int(16 / 0.875) = 18, then cropped


def test_imagenet_rejects_folders_that_are_not_class_ids(tmp_path):
    root = make_image_folder(tmp_path / "val", splits=None, classes=("n01440764", "cat"), per_class=2)
    with pytest.raises(ImageFolderError, match="ImageNet class ids.*cat"):
        load_dataset("imagenet", root=root, size=16)


# -------------------------------------------------------------------------------------------------- errors


def test_missing_root_names_it_and_the_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("image_folder", root=tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value) and "<class>" in str(err.value)
    with pytest.raises(DatasetNotFoundError, match="data.root"):
        load_dataset("image_folder")


def test_no_class_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageFolderError, match="no class folders"):
        image_folder(tmp_path / "empty")
    loose = tmp_path / "loose"
    loose.mkdir()
    for i in range(4):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(loose / f"img_{i}.png")
    with pytest.raises(ImageFolderError, match="no class folders.*4 image files directly"):
        image_folder(loose)


def test_empty_class_folder_is_named(split_folder):
    (split_folder / "val" / "ghosts").mkdir()
    (split_folder / "val" / "ghosts" / "readme.txt").write_text("no images here")
    with pytest.raises(ImageFolderError, match=r"ghosts holds no images"):
        image_folder(split_folder)


def test_unreadable_image_is_named(split_folder):
    bad = split_folder / "train" / "stripes" / "img_003.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(ImageFolderError, match="img_003.png"):
        image_folder(split_folder)


def test_splits_with_different_classes(split_folder):
    (split_folder / "val" / "stripes").rename(split_folder / "val" / "zebras")
    with pytest.raises(ImageFolderError, match=r"different classes.*stripes.*zebras"):
        image_folder(split_folder)


@pytest.mark.parametrize("extra, message", [("test", "both val/ and test/"), ("cats", "mixes split folders")])
def test_ambiguous_layouts(split_folder, extra, message):
    make_image_folder(split_folder / extra, splits=None, per_class=1)
    with pytest.raises(ImageFolderError, match=message):
        image_folder(split_folder)


def test_train_without_evaluation_split(tmp_path):
    root = make_image_folder(tmp_path / "t", splits=("train",), per_class=2)
    with pytest.raises(ImageFolderError, match="no evaluation split"):
        image_folder(root)


@pytest.mark.parametrize("kw, message", [({"size": 0}, "data.size=0"), ({"size": 8, "resize": 4}, "data.resize=4"),
                                         ({"resize": 20}, "data.resize=20"), ({"max_per_class": -1}, "max_per_class"),
                                         ({"n_test": 4, "test_fraction": 0.2}, "not both"),
                                         ({"test_fraction": 1.5}, "test_fraction=1.5")])
def test_bad_options(single_folder, kw, message):
    with pytest.raises(ValueError, match=message):
        image_folder(single_folder, **kw)


# -------------------------------------------------------------------------------------------- Hydra config


@pytest.mark.parametrize("group", ["image_folder", "imagenet"])
def test_config_groups_compose_and_load(split_folder, group, tmp_path):
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from bench.cli.config import register_configs

    register_configs()
    if group == "imagenet":
        root = make_image_folder(tmp_path / "inval", splits=None, classes=("n01440764",), per_class=2)
        overrides = [f"data.root={root}", "data.size=16"]
    else:
        overrides = [f"data.root={split_folder}", "data.size=8"]
    with initialize_config_module(config_module="bench.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"data={group}", *overrides])
    obj = OmegaConf.to_object(cfg)
    d = load_dataset(**dataclasses.asdict(obj.data))
    assert d.input_shape == ((3, 16, 16) if group == "imagenet" else (3, 8, 8))
    if group == "imagenet":
        assert d.meta["mean"] == list(IMAGENET_MEAN)


def test_split_layout_refuses_n_test(split_folder):
    with pytest.raises(ValueError, match="own splits.*one-folder layout"):
        image_folder(split_folder, n_test=4)
