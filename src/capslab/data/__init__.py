"""Datasets: registry, official-format readers, locations, checksums, downloads, required files,
transforms, batch loader; your own data (a folder of images, an .npz file, data from Python) and
the catalog that names every dataset. See docs/data.md."""

from capslab.data.catalog import (
    canonical_dataset,
    check_reachable,
    clear_cache,
    dataset_info,
    dataset_origin,
    describe_dataset,
    is_custom,
    load_dataset,
    require_files,
    split_size,
)
from capslab.data.custom import (
    from_tensors,
    from_torch_dataset,
    register_dataset,
    save_npz,
    unregister_dataset,
)
from capslab.data.dataset import ImageDataset, stratified_subset
from capslab.data.downloads import download, download_feedback
from capslab.data.loader import BatchLoader
from capslab.data.locations import default_data_dir, search_dirs
from capslab.data.registry import DatasetInfo, get_spec, list_datasets
from capslab.data.transforms import augment_batch, random_hflip, random_shift

__all__ = [
    "BatchLoader",
    "DatasetInfo",
    "ImageDataset",
    "augment_batch",
    "canonical_dataset",
    "check_reachable",
    "clear_cache",
    "dataset_info",
    "dataset_origin",
    "default_data_dir",
    "describe_dataset",
    "download",
    "download_feedback",
    "from_tensors",
    "from_torch_dataset",
    "get_spec",
    "is_custom",
    "list_datasets",
    "load_dataset",
    "random_hflip",
    "random_shift",
    "register_dataset",
    "require_files",
    "save_npz",
    "search_dirs",
    "split_size",
    "stratified_subset",
    "unregister_dataset",
]
