"""Datasets: registry, official-format readers, locations, checksums, downloads, required files,
transforms, batch loader. See docs/data.md."""

from capslab.data.dataset import ImageDataset, clear_cache, load_dataset, stratified_subset
from capslab.data.downloads import download, download_feedback
from capslab.data.loader import BatchLoader
from capslab.data.locations import default_data_dir, search_dirs
from capslab.data.registry import DatasetInfo, dataset_info, get_spec, list_datasets
from capslab.data.sources import require_files
from capslab.data.transforms import augment_batch, random_hflip, random_shift

__all__ = [
    "BatchLoader",
    "DatasetInfo",
    "ImageDataset",
    "augment_batch",
    "clear_cache",
    "dataset_info",
    "default_data_dir",
    "download",
    "download_feedback",
    "get_spec",
    "list_datasets",
    "load_dataset",
    "random_hflip",
    "random_shift",
    "require_files",
    "search_dirs",
    "stratified_subset",
]
