"""Filesystem blob store specifics the contract cannot state: the fan-out layout and stores of earlier versions."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

from dicomvault.adapters.blobs.filesystem import FANOUT, FilesystemBlobStore


def test_every_fanout_folder_exists_before_the_first_put(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    folders = [p.name for p in tmp_path.iterdir() if p.is_dir() and p.name != "tmp"]
    assert len(folders) == 16**FANOUT
    key = store.put(io.BytesIO(b"x" * 1000)).info.key
    assert (tmp_path / key[:FANOUT] / key).read_bytes() == b"x" * 1000
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == sorted([*folders, "tmp"])  # none added


def test_a_fanout_folder_removed_by_hand_is_recreated(tmp_path: Path) -> None:
    data = b"recreate me"
    key = hashlib.sha256(data).hexdigest()
    store = FilesystemBlobStore(tmp_path)
    os.rmdir(tmp_path / key[:FANOUT])
    assert store.put(io.BytesIO(data)).created
    assert store.read_range(key, 0, len(data)) == data


def test_objects_of_the_earlier_two_level_layout_are_still_served(tmp_path: Path) -> None:
    """Stores written before the 4,096-folder layout keep ``ab/cd/<key>``: read, listed, deduplicated, deleted."""
    old = b"written by an earlier version"
    key = hashlib.sha256(old).hexdigest()
    legacy = tmp_path / key[:2] / key[2:4] / key
    legacy.parent.mkdir(parents=True)
    legacy.write_bytes(old)
    store = FilesystemBlobStore(tmp_path)
    assert store.exists(key) and store.size(key) == len(old)
    with store.open(key) as f:
        assert f.read() == old
    assert store.read_range(key, 3, 4) == old[3:7]
    assert store.local_path(key) == legacy
    new_key = store.put(io.BytesIO(b"new object")).info.key
    assert sorted(store.iter_keys()) == sorted([key, new_key])
    again = store.put(io.BytesIO(old))
    assert not again.created and not (tmp_path / key[:FANOUT] / key).exists()  # not stored twice
    store.delete(key)
    assert not legacy.exists() and not store.exists(key)
