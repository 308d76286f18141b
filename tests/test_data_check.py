"""`medix data check` and the loader on good and broken datasets (JSONL, Parquet, image dirs, saved sets)."""

from __future__ import annotations

import json

import pytest
from medix_r1.cli import main
from medix_r1.train.data import DataError, check_rows, demo_dataset_path, load_image, load_rows


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def png(tmp_path):
    from PIL import Image

    p = tmp_path / "ok.png"
    Image.new("RGB", (8, 8), (200, 10, 10)).save(p)
    return p


def test_bundled_demo_set_is_clean():
    rows, base = load_rows(demo_dataset_path())
    assert 32 <= len(rows) <= 64
    assert check_rows(rows, base) == []


def test_broken_rows_are_reported_with_row_numbers(tmp_path, png):
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    p = _write_jsonl(
        tmp_path / "bad.jsonl",
        [
            {"image": ["ok.png"], "problem": "fine?", "solution": "<CT_SCAN> fine"},
            {"image": [], "solution": "<CT_SCAN> x"},
            {"image": [], "problem": "q", "solution": "<NOT_A_TAG> x"},
            {"image": [], "problem": "q", "solution": "<MRI_SCAN>   "},
            {"image": ["missing.png"], "problem": "q", "solution": "<X_RAY> a"},
            {"image": ["corrupt.png"], "problem": "q", "solution": "<X_RAY> a"},
            {"image": [], "problem": "q", "solution": "no tag here"},
            {"image": [], "problem": "  ", "solution": ""},
        ],
    )
    rows, base = load_rows(p)
    probs = [str(x) for x in check_rows(rows, base)]
    assert not any(s.startswith("row 1:") for s in probs)
    assert "row 2: problem: missing" in probs
    assert any(s.startswith("row 3: solution: unknown modality tag <NOT_A_TAG>") for s in probs)
    assert "row 4: solution: empty answer after the tag" in probs
    assert any(s.startswith("row 5: image[0]: image file not found") for s in probs)
    assert any(s.startswith("row 6: image[0]: unreadable image") for s in probs)
    assert any(s.startswith("row 7: solution: no leading modality tag") for s in probs)
    assert "row 8: problem: empty" in probs and "row 8: solution: empty" in probs


def test_cli_check(tmp_path, capsys, png):
    good = _write_jsonl(
        tmp_path / "good.jsonl", [{"image": ["ok.png"], "problem": "q", "solution": "<X_RAY> a"}]
    )
    assert main(["data", "check", str(good)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"image": [], "problem": "q", "solution": "<FOO> a"}])
    assert main(["data", "check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "row 1: solution: unknown modality tag <FOO>" in out and "--data.skip_bad=true" in out
    assert main(["data", "check", str(tmp_path / "nope.jsonl")]) == 2
    assert "not found" in capsys.readouterr().err


def test_dicom_images_load():
    from pydicom.data import get_testdata_file

    img = load_image(get_testdata_file("CT_small.dcm"), base=demo_dataset_path().parent, max_side=32)
    assert img.mode == "RGB" and max(img.size) <= 32


def test_parquet_image_folder_and_save_to_disk(tmp_path, png):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    rows = [{"image": [{"bytes": png.read_bytes(), "path": None}], "problem": "q", "solution": "<X_RAY> a"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    got, base = load_rows(tmp_path / "d.parquet")
    assert check_rows(got, base) == []

    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(png.read_bytes())
    _write_jsonl(
        folder / "metadata.jsonl", [{"file_name": "a.png", "problem": "q", "solution": "<CT_SCAN> a"}]
    )
    got, base = load_rows(folder)
    assert got[0]["image"] == ["a.png"] and check_rows(got, base) == []

    from PIL import Image

    ds = Dataset.from_list([{"image": [Image.open(png)], "problem": "q", "solution": "<X_RAY> a"}])
    ds.save_to_disk(str(tmp_path / "saved"))
    got, base = load_rows(tmp_path / "saved")
    assert len(got) == 1 and check_rows(got, base) == []


def test_unsupported_inputs(tmp_path):
    with pytest.raises(DataError, match="never downloads"):
        load_rows(tmp_path / "hub/dataset")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported"):
        load_rows(tmp_path / "x.csv")


def test_non_utf8_and_broken_json_are_one_line_errors(tmp_path, capsys):
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(
        b'{"problem": "q", "solution": "<X_RAY> a"}\n{"problem": "caf\xe9", "solution": "<X_RAY> a"}\n'
    )
    bad_json = tmp_path / "whole.json"
    bad_json.write_bytes(b'[{"problem": "\xff"}]')
    broken = tmp_path / "broken.json"
    broken.write_text('[{"problem": "q",')
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "\n")
    not_rows = tmp_path / "ints.json"
    not_rows.write_text("[1, 2]")
    for path, says in (
        (latin1, "line 2: not UTF-8 text (byte 0xe9 at column 17). Fix or remove those lines. Re-save"),
        (bad_json, f"{bad_json}: not UTF-8 text (byte 0xff at offset 14)"),
        (broken, f"{broken}: not valid JSON"),
        (deep, f"{deep}: 1 bad line(s): line 1: JSON nested too deeply"),
        (not_rows, f"{not_rows}: expected a JSON list of row objects"),
    ):
        assert main(["data", "check", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and says in err, err
    with pytest.raises(DataError) as e:
        load_rows(latin1)
    assert (e.value.path, e.value.line) == (str(latin1), 2) and "iconv" in str(e.value)


def test_attack_hostile_image_references_are_that_rows_error(tmp_path, capsys, png):
    """`{"bytes": 1e11}`, `{"bytes": "abc"}`, `/proc/self/mem`, a 3 GB sparse file and a 13000 x 13000 PNG:
    each is its row's error in `data check` (no traceback, nothing read whole, nothing decoded)."""
    import resource

    from PIL import Image

    sparse = tmp_path / "sparse.png"
    with open(sparse, "wb") as f:
        f.truncate(3 * 2**30)  # 3 GB of nothing: refused from its size, never read
    big = tmp_path / "big.png"
    Image.new("1", (13000, 13000)).save(big)  # a small file that decodes to 169 M pixels
    rows = [
        {"image": [{"bytes": 1e11}], "problem": "q", "solution": "<X_RAY> a"},
        {"image": [{"bytes": 100_000_000_000}], "problem": "q", "solution": "<X_RAY> a"},
        {"image": [{"bytes": "abc"}], "problem": "q", "solution": "<X_RAY> a"},
        {"image": ["/proc/self/mem"], "problem": "q", "solution": "<X_RAY> a"},
        {"image": [{"path": "/proc/self/mem"}], "problem": "q", "solution": "<X_RAY> a"},
        {"image": ["sparse.png"], "problem": "q", "solution": "<X_RAY> a"},
        {"image": ["big.png"], "problem": "q", "solution": "<X_RAY> a"},
        {"image": ["ok.png"], "problem": "q", "solution": "<X_RAY> a"},
    ]
    p = _write_jsonl(tmp_path / "hostile.jsonl", rows)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert main(["data", "check", str(p)]) == 1
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    out = capsys.readouterr().out
    assert "row 1: image[0]: image entry's bytes must be binary data, got float" in out
    assert "row 2: image[0]: image entry's bytes must be binary data, got int" in out
    assert "row 3: image[0]: image entry's bytes must be binary data, got str" in out
    assert "row 4: image[0]: image file /proc/self/mem cannot be read" in out
    assert "row 5: image[0]: image file /proc/self/mem cannot be read" in out
    assert "row 6: image[0]: image file" in out and "3,221,225,472 bytes, more than" in out
    assert "row 7: image[0]: image" in out and "13000 x 13000 pixels" in out
    assert "row 8" not in out
    assert grew < 300 * 1024, f"peak RSS grew by {grew / 1024:.0f} MiB"  # KiB


def _as_loaded(frame):
    """A decoded frame as load_image renders it (percentile window to 8 bits)."""
    import numpy as np

    arr = frame.astype(np.float64)
    lo, hi = np.percentile(arr, [0.5, 99.5])
    return (np.clip((arr - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["rtdose.dcm", "SC_rgb_rle_2frame.dcm", "examples_ybr_color.dcm"])
def test_a_multi_frame_dicom_is_its_middle_frame(name):
    """pydicom's bundled multi-frame files (a 15-frame dose volume, 2-frame RLE RGB, 30-frame JPEG YBR):
    the image is the middle frame, the only one decoded (colour multi-frame files used to fail)."""
    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file

    f = get_testdata_file(name)
    ds = pydicom.dcmread(f)
    n = int(ds.NumberOfFrames)
    img = load_image(f, base=demo_dataset_path().parent)
    want = _as_loaded(ds.pixel_array[n // 2])
    got = np.asarray(img)
    if want.ndim == 2:
        got = got[..., 0]
    assert img.mode == "RGB" and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_a_multi_frame_dicom_decodes_one_frame_only(tmp_path):
    """A 100-frame 512 x 512 16-bit DICOM (52 MB of pixels): peak Python/NumPy allocation while loading stays
    near the file's own bytes (read once, parsed once) plus one frame, not the whole volume in float64
    (before: every frame decoded, then converted to float64: ~8 x the pixel data more)."""
    import tracemalloc

    import numpy as np
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("rtdose.dcm"))
    frames, side = 100, 512
    ds.Rows = ds.Columns = side
    ds.NumberOfFrames = frames
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = (np.arange(frames * side * side, dtype=np.uint64) % 4099).astype(np.uint16).tobytes()
    path = tmp_path / "volume.dcm"
    ds.save_as(path)
    del ds
    size = path.stat().st_size
    tracemalloc.start()
    try:
        img = load_image(path, base=tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"\n{frames}-frame DICOM of {size / 2**20:.0f} MiB: peak traced allocation {peak / 2**20:.0f} MiB")
    assert img.size == (side, side)
    assert peak < 2.5 * size  # the file's bytes and their parsed copy, one frame; not ~10 x the file
