"""Registry of the datasets CapsLab knows: files, official URLs, checksums, shapes, statistics.

Nothing here reads a file: :func:`dataset_info` and :func:`list_datasets` are free.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from capslab.errors import UnknownDatasetError


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset (``mean``/``std`` per channel, [0,1] pixels)."""

    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return (self.channels, self.image_size, self.image_size)

    def model_options(self) -> dict:
        """The common model options (see ``capslab.models.registry``) for this dataset."""
        return {
            "in_channels": self.channels,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "mean": list(self.mean),
            "std": list(self.std),
        }

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def padded(self, size: int) -> DatasetInfo:
        """This dataset's images placed on a black ``size`` x ``size`` canvas (``pad_to``):
        the same classes, ``image_size=size``, and the exact statistics of the padded images
        (the zeros added lower the mean and change the spread, wherever the image is placed)."""
        if size < self.image_size:
            raise ValueError(f"cannot pad {self.image_size}x{self.image_size} images to {size}")
        share = self.image_size**2 / size**2  # the fraction of the canvas the image covers
        mean = tuple(m * share for m in self.mean)
        # E[x^2] scales like the mean: the padding adds zeros only
        std = tuple(math.sqrt(max((s * s + m * m) * share - mp * mp, 0.0))
                    for m, s, mp in zip(self.mean, self.std, mean, strict=True))
        return replace(self, image_size=size, mean=mean, std=std)


@dataclass(frozen=True)
class FileSpec:
    """One file as its authors publish it.

    ``md5`` is the published checksum of the file itself; ``""`` when none is known for certain
    (not pinned: the file is used with a one-line warning that it is not verified). For gzip'd
    files ``raw_md5`` is the md5 of the DECOMPRESSED bytes: mirrors that rewrite the gzip header
    (Debian's ``dataset-fashion-mnist``) or users who keep the files gunzipped are verified
    with it.
    ``urls`` are the official locations, tried in order; ``dataset`` (the registry name) places
    the file on a mirror given by ``$CAPSLAB_MIRRORS`` (see :func:`capslab.data.downloads.file_urls`).
    """

    name: str
    md5: str
    urls: tuple[str, ...]
    size: int | None = None
    raw_md5: str | None = None
    dataset: str = ""

    @property
    def gunzipped_name(self) -> str | None:
        """The name of the decompressed variant (``x.gz`` -> ``x``), ``None`` if not gzip'd."""
        return self.name[:-3] if self.name.endswith(".gz") else None

    @property
    def unzipped_name(self) -> str | None:
        """The name of the file a ``.zip`` of one file extracts to (``x.mat.zip`` -> ``x.mat``),
        ``None`` if not a zip."""
        return self.name[:-4] if self.name.endswith(".zip") else None

    @property
    def pinned(self) -> bool:
        """Whether a checksum of this file is known (``md5`` or ``raw_md5``)."""
        return bool(self.md5 or self.raw_md5)


@dataclass(frozen=True)
class SplitSpec:
    """The files holding one split and the reader that decodes them.

    ``reader`` is one of ``"idx"`` (``files`` = images, labels), ``"cifar10"``/``"cifar100"``
    (``files`` = the tarball, ``members`` = the pickle batches inside it, also accepted as an
    extracted folder ``folder``), ``"svhn"`` (``files`` = the .mat file), ``"smallnorb"``
    (``files`` = the ``dat``, ``cat`` and ``info`` binary matrices) or ``"affnist"`` (``files``
    = the ``.mat.zip``, ``members`` = the one ``.mat`` inside it).
    """

    files: tuple[str, ...]
    reader: str
    size: int
    members: tuple[str, ...] = ()
    folder: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    info: DatasetInfo
    files: dict[str, FileSpec]
    splits: dict[str, SplitSpec]
    folders: tuple[str, ...] = ()  # sub-folder names accepted under a data root
    offline_dirs: tuple[str, ...] = ()  # known system-wide copies (searched last)
    homepage: str = ""
    license: str = ""
    member_md5: dict[str, str] = field(default_factory=dict)  # extracted-folder files

    @property
    def name(self) -> str:
        return self.info.name


_MNIST_URLS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_URLS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
_CIFAR_URLS = ("https://www.cs.toronto.edu/~kriz/",)


def _files(dataset: str, bases: tuple[str, ...], *table: tuple) -> dict[str, FileSpec]:
    """``{name: FileSpec}`` from rows ``(name, md5[, size[, raw_md5]])``, one URL per base."""
    return {row[0]: FileSpec(row[0], row[1], tuple(b + row[0] for b in bases), *row[2:],
                             dataset=dataset)
            for row in table}


def _idx_splits() -> dict[str, SplitSpec]:
    return {
        "train": SplitSpec(("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"), "idx", 60000),
        "test": SplitSpec(("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"), "idx", 10000),
    }


_CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
_FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
    "Ankle boot",
)

DATASETS: dict[str, DatasetSpec] = {}


def _add(spec: DatasetSpec) -> None:
    DATASETS[spec.name] = spec


_add(DatasetSpec(
    info=DatasetInfo("mnist", 10, 1, 28, (0.1307,), (0.3081,), tuple(str(i) for i in range(10))),
    files=_files(
        "mnist", _MNIST_URLS,
        ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873", 9912422,
         "6bbc9ace898e44ae57da46a324031adb"),
        ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432", 28881,
         "a25bea736e30d166cdddb491f175f624"),
        ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3", 1648877,
         "2646ac647ad5339dbf082846283269ea"),
        ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c", 4542,
         "27ae3e4e09519cfbb04c329615203637"),
    ),
    splits=_idx_splits(),
    folders=("mnist", "MNIST", "MNIST/raw"),
    homepage="http://yann.lecun.com/exdb/mnist/",
    license="CC BY-SA 3.0 (as commonly cited)",
))

_add(DatasetSpec(
    info=DatasetInfo("fashion-mnist", 10, 1, 28, (0.2860,), (0.3530,), _FASHION_CLASSES),
    files=_files(
        "fashion-mnist", _FASHION_URLS,
        ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d", 26421880,
         "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe", 29515,
         "9018921c3c673c538a1fc5bad174d6f9"),
        ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79", 4422102,
         "8181f5470baa50b63fa0f6fddb340f0a"),
        ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310", 5148,
         "15d484375f8d13e6eb1aabb0c3f46965"),
    ),
    splits=_idx_splits(),
    folders=("fashion-mnist", "fashion_mnist", "FashionMNIST", "FashionMNIST/raw"),
    offline_dirs=("/usr/share/datasets/fashion-mnist",),
    homepage="https://github.com/zalandoresearch/fashion-mnist",
    license="MIT",
))

_add(DatasetSpec(
    info=DatasetInfo("cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                     _CIFAR10_CLASSES),
    files=_files("cifar10", _CIFAR_URLS,
                 ("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a", 170498071)),
    splits={
        "train": SplitSpec(("cifar-10-python.tar.gz",), "cifar10", 50000,
                           tuple(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6)),
                           "cifar-10-batches-py"),
        "test": SplitSpec(("cifar-10-python.tar.gz",), "cifar10", 10000,
                          ("cifar-10-batches-py/test_batch",), "cifar-10-batches-py"),
    },
    folders=("cifar10", "cifar-10", "CIFAR10"),
    member_md5={
        "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
        "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
        "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    },
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
))

_add(DatasetSpec(
    info=DatasetInfo("cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    files=_files("cifar100", _CIFAR_URLS,
                 ("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85", 169001437)),
    splits={
        "train": SplitSpec(("cifar-100-python.tar.gz",), "cifar100", 50000,
                           ("cifar-100-python/train",), "cifar-100-python"),
        "test": SplitSpec(("cifar-100-python.tar.gz",), "cifar100", 10000,
                          ("cifar-100-python/test",), "cifar-100-python"),
    },
    folders=("cifar100", "cifar-100", "CIFAR100"),
    member_md5={
        "cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
        "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    },
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
))

_add(DatasetSpec(
    info=DatasetInfo("svhn", 10, 3, 32, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                     tuple(str(i) for i in range(10))),
    files=_files(
        "svhn", ("http://ufldl.stanford.edu/housenumbers/",),
        ("train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
        ("test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
        ("extra_32x32.mat", "a93ce644f1a588dc4d68dda5feec44a7"),
    ),
    splits={
        "train": SplitSpec(("train_32x32.mat",), "svhn", 73257),
        "test": SplitSpec(("test_32x32.mat",), "svhn", 26032),
        "extra": SplitSpec(("extra_32x32.mat",), "svhn", 531131),
    },
    folders=("svhn", "SVHN"),
    homepage="http://ufldl.stanford.edu/housenumbers/",
))

# smallNORB (Huang & LeCun): stereo pairs of 96x96 images in NORB's binary-matrix format,
# presented as both cameras (2 channels) reduced to 48x48 by area averaging at decode time.
# NYU publishes no checksums: these md5s are the ones public smallNORB loaders pin (of the
# .gz and of the decompressed .mat), the same in independent code bases. The mean/std are a
# PLACEHOLDER, not measured (the files were not at hand; docs/data.md says how to).
_NORB_URLS = ("https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/",)
_NORB_TRAIN = "smallnorb-5x46789x9x18x6x2x96x96-training"
_NORB_TEST = "smallnorb-5x01235x9x18x6x2x96x96-testing"

_add(DatasetSpec(
    info=DatasetInfo("smallnorb", 5, 2, 48, (0.5, 0.5), (0.25, 0.25),
                     ("animal", "human", "airplane", "truck", "car")),
    files=_files(
        "smallnorb", _NORB_URLS,
        (f"{_NORB_TRAIN}-dat.mat.gz", "66054832f9accfe74a0f4c36a75bc0a2", None,
         "8138a0902307b32dfa0025a36dfa45ec"),
        (f"{_NORB_TRAIN}-cat.mat.gz", "23c8b86101fbf0904a000b43d3ed2fd9", None,
         "fd5120d3f770ad57ebe620eb61a0b633"),
        (f"{_NORB_TRAIN}-info.mat.gz", "51dee1210a742582ff607dfd94e332e3", None,
         "19faee774120001fc7e17980d6960451"),
        (f"{_NORB_TEST}-dat.mat.gz", "e4ad715691ed5a3a5f138751a4ceb071", None,
         "e9920b7f7b2869a8f1a12e945b2c166c"),
        (f"{_NORB_TEST}-cat.mat.gz", "5aa791cd7e6016cf957ce9bdb93b8603", None,
         "fd5120d3f770ad57ebe620eb61a0b633"),
        (f"{_NORB_TEST}-info.mat.gz", "a9454f3864d7fd4bb3ea7fc3eb84924e", None,
         "7c5b871cc69dcadec1bf6a18141f5edc"),
    ),
    splits={
        split: SplitSpec(tuple(f"{stem}-{kind}.mat.gz" for kind in ("dat", "cat", "info")),
                         "smallnorb", 24300)
        for split, stem in (("train", _NORB_TRAIN), ("test", _NORB_TEST))
    },
    folders=("smallnorb", "smallNORB", "small_norb", "norb"),
    homepage="https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/",
))

# affNIST (Tieleman): MNIST digits on a 40x40 canvas. The test split is the transformed test
# set (each MNIST test digit under 32 random affine transforms); the training split is MNIST's
# 60,000 training digits just centred on the canvas. No checksum is published or known for
# certain: the files are not pinned (used with a warning). Mean/std: MNIST's on a 40x40 canvas.
_AFFNIST_URL = "https://www.cs.toronto.edu/~tijmen/affNIST/32x/"
_ON_40 = DATASETS["mnist"].info.padded(40)

_add(DatasetSpec(
    info=replace(_ON_40, name="affnist", mean=tuple(round(m, 4) for m in _ON_40.mean),
                 std=tuple(round(s, 4) for s in _ON_40.std)),
    files={
        "training_and_validation.mat.zip": FileSpec(
            "training_and_validation.mat.zip", "",
            (_AFFNIST_URL + "just_centered/training_and_validation.mat.zip",), dataset="affnist"),
        "test.mat.zip": FileSpec(
            "test.mat.zip", "", (_AFFNIST_URL + "transformed/test.mat.zip",), dataset="affnist"),
    },
    splits={
        "train": SplitSpec(("training_and_validation.mat.zip",), "affnist", 60000,
                           ("training_and_validation.mat",)),
        "test": SplitSpec(("test.mat.zip",), "affnist", 320000, ("test.mat",)),
    },
    folders=("affnist", "affNIST"),
    homepage="https://www.cs.toronto.edu/~tijmen/affNIST/",
))

_ALIASES = {
    "fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist",
    "cifar-10": "cifar10", "cifar_10": "cifar10", "cifar-100": "cifar100", "cifar_100": "cifar100",
    "small-norb": "smallnorb", "small_norb": "smallnorb", "norb": "smallnorb",
}


def canonical_name(name: str) -> str:
    """The registry name of ``name`` (case-insensitive; ``fashion_mnist`` -> ``fashion-mnist``)."""
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}"
        )
    return key


def get_spec(name: str) -> DatasetSpec:
    return DATASETS[canonical_name(name)]


def split_spec(name: str, split: str) -> SplitSpec:
    spec = get_spec(name)
    if split not in spec.splits:
        raise UnknownDatasetError(
            f"dataset {spec.name!r} has no split {split!r}; splits: {', '.join(spec.splits)}"
        )
    return spec.splits[split]


def dataset_info(name: str) -> DatasetInfo:
    """Shapes, class count and normalisation statistics of ``name`` without reading any file."""
    return get_spec(name).info


def list_datasets() -> list[str]:
    return list(DATASETS)
