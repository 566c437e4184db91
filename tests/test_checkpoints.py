import pytest
import torch

from nni_safs.storage.atomic import atomic_write
from nni_safs.storage.checkpoints import CheckpointMismatchError, load_checkpoint, save_checkpoint


def test_roundtrip_with_metadata(tmp_path):
    path = tmp_path / "sub" / "ck.pt"
    state = {"w": torch.arange(6.0).reshape(2, 3)}
    meta = {"model": "lenet5", "dataset": "mnist5k", "seed": 0, "ratio": 0.99, "scope": "layer"}
    save_checkpoint(path, state, meta, masks={"w": state["w"] > 2})
    payload = load_checkpoint(path, expect=meta)
    assert torch.equal(payload["state"]["w"], state["w"])
    assert payload["masks"]["w"].sum() == 3
    assert list(path.parent.iterdir()) == [path]  # no temp file left behind


def test_mismatch_is_refused_with_the_differences(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {}, {"model": "lenet5", "ratio": 0.99, "seed": 0})
    with pytest.raises(CheckpointMismatchError, match=r"ratio: requested 0\.9, checkpoint has 0\.99"):
        load_checkpoint(path, expect={"model": "lenet5", "ratio": 0.9, "seed": 0})
    with pytest.raises(CheckpointMismatchError, match="scope: requested 'global', checkpoint has '<missing>'"):
        load_checkpoint(path, expect={"scope": "global"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"w": torch.ones(2)}, {"v": 1})

    def crash(handle):
        handle.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert load_checkpoint(path, expect={"v": 1})["state"]["w"].sum() == 2
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_a_truncated_or_damaged_checkpoint_is_refused_by_name(tmp_path):
    from nni_safs.storage.checkpoints import CorruptCheckpointError
    path = tmp_path / "pruned.pt"
    save_checkpoint(path, {"w": torch.arange(1000.0)}, {"v": 1})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CorruptCheckpointError, match=r"pruned\.pt' is unreadable .*delete it"):
        load_checkpoint(path)
    state = {"w": torch.arange(1000.0)}
    torch.save({"meta": {"v": 1}, "state": state, "checksum": "0" * 64}, path)  # loads, wrong bytes
    with pytest.raises(CorruptCheckpointError, match="does not match its recorded checksum"):
        load_checkpoint(path)


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    import errno
    path = tmp_path / "pruned.pt"
    save_checkpoint(path, {"w": torch.ones(2)}, {"v": 1})

    def disk_full(handle):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match=r"could not write '.*pruned\.pt': No space left on device"):
        atomic_write(path, disk_full)
    assert load_checkpoint(path, expect={"v": 1})["state"]["w"].sum() == 2  # the old file, still valid
    assert [p.name for p in tmp_path.iterdir()] == ["pruned.pt"]
