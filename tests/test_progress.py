"""Progress of slow data preparation (convjax.data.progress): silent when quick, a line every
few seconds when slow, and wired into extracting an archive and decoding a folder."""

import re
import tarfile

import numpy as np
import pytest

import convjax.data.progress as progress_module
from convjax.config import DataConfig
from convjax.data import (
    DecodeSpec,
    FolderSource,
    list_image_files,
    load_image_folder,
    load_splits,
    resolve_folder,
    to_arrays,
)
from convjax.data.progress import Progress
from helpers import write_image_folder


class FakeClock:
    """Seconds that pass only when the test says so (or `step` per reading)."""

    def __init__(self, step: float = 0.0):
        self.now, self.step, self.reads = 0.0, step, 0

    def __call__(self) -> float:
        self.reads += 1
        self.now += self.step
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(progress_module, "clock", fake)
    return fake


def lines(capsys) -> list[str]:
    captured = capsys.readouterr()
    assert captured.out == ""  # progress goes to stderr only
    return captured.err.splitlines()


def test_quick_work_prints_nothing(clock, capsys):
    with Progress("decoding train", 45_000, "images") as shown:
        for _ in range(10):
            clock.now += 0.19
            shown.update(4_500)
    assert lines(capsys) == []


def test_slow_work_prints_a_line_every_few_seconds_and_one_at_the_end(clock, capsys):
    with Progress("decoding train", 45_000, "images") as shown:
        for t, n in ((1.0, 6_400), (2.5, 6_400), (3.0, 6_400), (7.4, 6_400), (8.0, 6_400)):
            clock.now = t
            shown.update(n)
        clock.now = 10.0
        shown.update(13_000)
    assert lines(capsys) == [
        "decoding train: 12,800/45,000 images, 2 s",  # the first after 2 s
        "decoding train: 32,000/45,000 images, 8 s",  # 5 s later or more: not at 3.0, 7.4
        "decoding train: 45,000/45,000 images in 10 s",
    ]


def test_disabled_or_failed_work_prints_no_line_or_no_last_line(clock, capsys):
    with Progress("decoding train", 10, "images", enabled=False) as shown:
        clock.now = 60.0
        shown.update(10)
    assert lines(capsys) == []
    clock.now = 0.0
    with pytest.raises(KeyboardInterrupt), Progress("decoding train", 10, "images") as shown:
        clock.now = 60.0
        shown.update(5)
        raise KeyboardInterrupt
    assert lines(capsys) == ["decoding train: 5/10 images, 60 s"]  # no "in 60 s" after it


def test_a_per_file_counter_reads_the_clock_only_every_check_every_files(clock, capsys):
    with Progress("extracting a.tar.gz", check_every=100, fraction=lambda: 0.25) as shown:
        reads = clock.reads
        for _ in range(1_000):
            shown.update()
        assert clock.reads - reads == 10
        clock.now = 3.0
        shown.update(100)
    assert lines(capsys)[0] == "extracting a.tar.gz: 1,100 files (25% done), 3 s"


def test_a_slow_archive_extraction_shows_files_and_share_read(tmp_path, capsys, monkeypatch):
    write_image_folder(tmp_path / "ds" / "train", per_class=130, size=(4, 4))
    write_image_folder(tmp_path / "ds" / "test", per_class=1, size=(4, 4))
    archive = tmp_path / "ds.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "ds", arcname="ds")
    monkeypatch.setattr(progress_module, "clock", FakeClock(step=1.0))  # 1 s per reading
    cfg = DataConfig(source="folder", folder=str(archive), cache_dir=str(tmp_path / "quiet"))
    load_splits(cfg, seed=0, progress=False)  # as the runner with train.verbose=0
    assert lines(capsys) == []
    folder = resolve_folder(archive, tmp_path / "cache")
    assert len(list((folder / "train").glob("*/*.png"))) == 260
    shown = lines(capsys)
    assert re.fullmatch(r"extracting ds\.tar\.gz: 200 files \(\d+% done\), \d+ s", shown[0])
    assert re.fullmatch(r"extracting ds\.tar\.gz: 262 files \(\d+% done\) in \d+ s", shown[-1])


def test_a_slow_first_decode_shows_images_decoded(tmp_path, capsys, monkeypatch):
    root = write_image_folder(tmp_path / "train", per_class=6)
    files, labels, names = list_image_files(root)
    monkeypatch.setattr(progress_module, "clock", FakeClock(step=3.0))
    src = FolderSource(files, labels, names, DecodeSpec((4, 4)))
    quiet = to_arrays(src, progress=False)
    assert lines(capsys) == []
    loud = to_arrays(src, chunk=5, name="train")
    assert lines(capsys) == ["decoding train: 5/12 images, 3 s",  # 10/12 at 6 s: too soon
                             "decoding train: 12/12 images, 9 s",
                             "decoding train: 12/12 images in 12 s"]
    np.testing.assert_array_equal(quiet.images, loud.images)
    load_image_folder(root, (4, 4), cache_dir=False)
    assert lines(capsys)[-1] == "decoding train/: 12/12 images in 6 s"
