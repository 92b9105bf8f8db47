"""Sharded synthetic datasets: fixed-size safetensors shards + a JSON manifest; and DM-Improves-AT's npz format.

Layout of a dataset folder::

    manifest.json                   what was generated and how (model, sampler settings, seeds, shard list)
    shards/shard-000000.safetensors "image" uint8 (N, H, W, C) or (N, C, H, W), "label" int64 (N,)
    shards/shard-000000.json        the shard's record (written after the shard; its presence = shard done)
    selection.safetensors           optional: "index" int64, the samples kept by confidence filtering

Every file is written to a temporary name in the same folder, flushed to disk and renamed, so a killed writer
never leaves a truncated shard behind. Shards hold no pickled objects (safetensors only) and are read either
sample by sample without loading whole shards (:class:`ShardDataset`, memory-mapped) or streamed shard by shard
(:class:`ShardStream`, for DataLoader workers and DDP ranks).

The DM-Improves-AT releases (Wang et al. 2023) are single ``np.savez`` files with ``image`` (uint8 NHWC) and
``label``; :func:`read_npz` / :func:`write_npz` read and write them, :func:`npz_to_shards` and
:func:`shards_to_npz` convert.

Modules: :mod:`.format` (names, manifest, reading one shard), :mod:`.writer` (shards, shard records, selection),
:mod:`.reader` (datasets), :mod:`.npz` (DM-Improves-AT files).
"""

from ..._core.io import atomic_write_bytes, sha256_file
from .format import (
    FORMAT,
    FORMAT_VERSION,
    LAYOUTS,
    MANIFEST_NAME,
    SELECTION_NAME,
    SHARD_DIR,
    atomic_write_json,
    load_manifest,
    read_shard,
    shard_name,
    write_manifest,
)
from .npz import npz_to_shards, read_npz, shards_to_npz, write_npz
from .reader import ShardDataset, ShardStream, load_shards
from .writer import write_shard

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "SELECTION_NAME",
    "SHARD_DIR",
    "LAYOUTS",
    "sha256_file",
    "atomic_write_bytes",
    "atomic_write_json",
    "write_shard",
    "read_shard",
    "shard_name",
    "load_manifest",
    "write_manifest",
    "ShardDataset",
    "ShardStream",
    "load_shards",
    "read_npz",
    "write_npz",
    "npz_to_shards",
    "shards_to_npz",
]
