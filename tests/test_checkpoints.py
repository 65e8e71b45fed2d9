"""Checkpoints: Sequential.save is atomic (temporary file, fsync, rename) and survives a
process killed in the middle of it; load refuses wrong keys, shapes and values without
changing the model."""
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import fastconv
from fastconv import nn

from _isolated import child_env


def _model():
    fastconv.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def _state(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def _assert_state(model, expected):
    state = model.state_dict()
    assert list(state) == list(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_save_load_round_trip(tmp_path):
    model = _model()
    model[1].running_mean += 0.5  # buffers travel too
    path = tmp_path / "model.npz"
    model.save(path)
    other = _model()
    for p in other.parameters():
        p.data[...] = 0
    assert other.load(path) is other
    _assert_state(other, _state(model))
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]  # no temporary file left


def test_save_writes_a_temporary_file_fsyncs_it_then_renames(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])

    def replace(src, dst):
        events.append(("replace", os.path.dirname(src), os.path.basename(dst)))
        with np.load(src) as data:  # complete before it takes the final name
            assert "0.weight" in data.files
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    _model().save(tmp_path / "model.npz")
    assert events[0] == "fsync"
    assert events[1] == ("replace", str(tmp_path), "model.npz")


def test_a_failed_save_keeps_the_old_checkpoint_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    model = _model()
    model.save(path)
    old = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    model[0].weight.data[...] = 0  # what a successful save would write differs from the old file
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == old
    assert sorted(os.listdir(tmp_path)) == ["model.npz"]


def test_save_into_a_missing_directory_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        _model().save(tmp_path / "missing" / "model.npz")


# ---------------------------------------------------------------------------------------
# load: keys, shapes and values verified before anything is copied
# ---------------------------------------------------------------------------------------

def _checkpoint(**changes):
    state = {k: np.full_like(v, 0.25) for k, v in _state(_model()).items()}
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            del state[key]
        else:
            state[key] = value
    return state


BAD_STATES = {
    "missing-key": (_checkpoint(**{"5__bias": None}), ["Missing key(s)", "'5.bias'"]),
    "unexpected-key": (_checkpoint(**{"9__weight": np.zeros(3, np.float32)}),
                       ["Unexpected key(s)", "'9.weight'"]),
    "wrong-shape": (_checkpoint(**{"0__weight": np.zeros((4, 1, 5, 5), np.float32)}),
                    ["size mismatch for 0.weight", "(4, 1, 5, 5)", "(4, 1, 3, 3)"]),
    "transposed-linear": (_checkpoint(**{"5__weight": np.zeros((64, 3), np.float32)}),
                          ["size mismatch for 5.weight", "(64, 3)", "(3, 64)"]),
    "scalar-for-a-vector": (_checkpoint(**{"0__bias": np.float32(1)}),
                            ["size mismatch for 0.bias", "()"]),
    "strings": (_checkpoint(**{"5__bias": np.array(["a", "b", "c"])}),
                ["dtype mismatch for 5.bias", "<U1"]),
    "objects": (_checkpoint(**{"5__bias": np.array([None, None, None])}),
                ["dtype mismatch for 5.bias", "object"]),
    "several-at-once": (_checkpoint(**{"0__weight": np.zeros(3, np.float32), "1__running_var": None}),
                        ["size mismatch for 0.weight", "Missing key(s)", "'1.running_var'"]),
}


@pytest.mark.parametrize("label", list(BAD_STATES))
def test_load_state_dict_refuses_and_changes_nothing(label):
    state, fragments = BAD_STATES[label]
    model = _model()
    before = _state(model)
    with pytest.raises(RuntimeError) as info:
        model.load_state_dict(state)
    for fragment in fragments:
        assert fragment in str(info.value)
    _assert_state(model, before)


@pytest.mark.parametrize("value", [None, [("0.weight", np.zeros(1))], "0.weight"])
def test_load_state_dict_refuses_non_mappings(value):
    with pytest.raises(TypeError, match="dict-like"):
        _model().load_state_dict(value)


def test_non_strict_load_reports_keys_but_still_checks_shapes():
    model = _model()
    missing, unexpected = model.load_state_dict(
        _checkpoint(**{"5__bias": None, "9__weight": np.zeros(2)}), strict=False)
    assert missing == ["5.bias"] and unexpected == ["9.weight"]
    np.testing.assert_array_equal(model[0].weight.data, 0.25)
    with pytest.raises(RuntimeError, match="size mismatch for 0.bias"):
        model.load_state_dict({"0.bias": np.zeros(5)}, strict=False)


def test_load_casts_to_the_model_dtype_and_keeps_the_arrays():
    model = _model()
    weight = model[0].weight.data
    model.load_state_dict(_checkpoint(**{"0__weight": np.ones((4, 1, 3, 3), np.float64)}))
    assert model[0].weight.data is weight and weight.dtype == np.float32
    np.testing.assert_array_equal(weight, 1)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "pickled"])
def test_load_of_a_damaged_file_raises_and_changes_nothing(tmp_path, damage):
    path = tmp_path / "model.npz"
    _model().save(path)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x93NUMPY garbage" * 10)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        np.savez(path, **{"0.weight": np.array([object()] * 36, dtype=object).reshape(4, 1, 3, 3)})
    model = _model()
    for p in model.parameters():
        p.data[...] = 7
    before = _state(model)
    with pytest.raises((ValueError, OSError, EOFError, zipfile.BadZipFile, RuntimeError)):
        model.load(path)
    _assert_state(model, before)


# ---------------------------------------------------------------------------------------
# a process killed while it saves
# ---------------------------------------------------------------------------------------

_SAVER = textwrap.dedent(r"""
    import sys
    import numpy as np
    from fastconv import nn
    path = sys.argv[1]
    # ~40 MB of weights, so that a save takes long enough to be interrupted
    model = nn.Sequential(*[nn.Linear(1600, 1600) for _ in range(4)])
    version = 0
    while True:
        for p in model.parameters():
            p.data[...] = version  # every array of version v holds v
        print("saving", version, flush=True)
        model.save(path)
        print("saved", version, flush=True)
        version += 1
""")


def _versions_in(path):
    with np.load(path) as data:
        return {float(data[key].flat[0]) for key in data.files} | {
            float(v) for key in data.files for v in (data[key].min(), data[key].max())}


def test_a_checkpoint_survives_a_kill_in_the_middle_of_a_save(tmp_path):
    path = tmp_path / "model.npz"
    killed_mid_save = 0
    for attempt in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)],
                                stdout=subprocess.PIPE, text=True, env=child_env())
        try:
            seen = []
            deadline = time.monotonic() + 120
            # let a few versions land, then kill right after a save starts
            while time.monotonic() < deadline:
                line = proc.stdout.readline().split()
                assert line, "the saver died"
                seen.append((line[0], int(line[1])))
                if line[0] == "saving" and int(line[1]) >= 2 + attempt:
                    time.sleep(0.01 * attempt)
                    break
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        last_saved = max(v for what, v in seen if what == "saved")
        in_flight = seen[-1][1]
        # the checkpoint is a complete one: the last finished save or the interrupted one
        versions = _versions_in(path)
        assert len(versions) == 1 and versions <= {last_saved, in_flight}, versions
        model = nn.Sequential(*[nn.Linear(1600, 1600) for _ in range(4)]).load(path)
        assert model[0].weight.data[0, 0] in (last_saved, in_flight)
        killed_mid_save += versions == {last_saved}
    assert killed_mid_save >= 1, "no kill landed before a save completed"


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_save_gives_the_usual_file_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        _model().save(tmp_path / "model.npz")
        np.savez(tmp_path / "plain.npz", a=np.zeros(1))
    finally:
        os.umask(umask)
    mode = os.stat(tmp_path / "model.npz").st_mode & 0o777
    assert mode == os.stat(tmp_path / "plain.npz").st_mode & 0o777 == 0o644
