"""``-config-dir`` / ``--config-dir`` (issue 13 item 3): the directory's regular files, checked
before any cloud call, one line naming the file and the flag as typed."""

from __future__ import annotations

import os

import pytest

from condor_annex.cli import classic_plan
from condor_annex.cli.classic_options import parse_args
from condor_annex.errors import BadInputError
from condor_annex.service.config_dir import MAX_TOTAL_BYTES, read_config_dir


def test_regular_files_are_read_in_name_order(tmp_path):
    (tmp_path / "b.config").write_text("B = 2\n")
    (tmp_path / "A.config").write_text("A = 1\n")
    (tmp_path / "10-x").write_text("")
    assert read_config_dir(str(tmp_path), "--config-dir") == (
        ("10-x", b""), ("A.config", b"A = 1\n"), ("b.config", b"B = 2\n"))


def test_an_empty_directory_adds_nothing(tmp_path):
    assert read_config_dir(str(tmp_path), "-config-dir") == ()


@pytest.mark.parametrize("name", [".hidden", "notes~", "#draft", "run.sh", "x.py", "p.pl",
                                  "a.rpmnew", "a.dpkg-old"])
def test_files_htcondor_would_ignore_are_skipped(tmp_path, name):
    (tmp_path / name).write_text("IGNORED = 1\n")
    (tmp_path / "kept.config").write_text("K = 1\n")
    assert [n for n, _ in read_config_dir(str(tmp_path), "--config-dir")] == ["kept.config"]


@pytest.mark.parametrize("flag", ["-config-dir", "--config-dir"])
def test_a_symlink_is_refused_naming_it_and_the_flag_as_typed(tmp_path, flag):
    (tmp_path / "real").write_text("A = 1\n")
    (tmp_path / "link.config").symlink_to(tmp_path / "real")
    with pytest.raises(BadInputError) as e:
        read_config_dir(str(tmp_path), flag)
    msg = str(e.value)
    assert msg.startswith(f"{flag}: 'link.config' in ") and "is a symlink" in msg
    assert "\n" not in msg


def test_a_subdirectory_is_refused(tmp_path):
    (tmp_path / "sub").mkdir()
    with pytest.raises(BadInputError, match=r"^-config-dir: 'sub' in .* is a subdirectory"):
        read_config_dir(str(tmp_path), "-config-dir")


def test_a_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(BadInputError, match="^--config-dir: 'pipe' in .* is not a regular file"):
        read_config_dir(str(tmp_path), "--config-dir")


def test_more_than_1_mib_in_all_is_refused_naming_the_file_that_crosses_it(tmp_path):
    (tmp_path / "a").write_bytes(b"#" * (MAX_TOTAL_BYTES - 10) + b"\n")
    (tmp_path / "b").write_text("B = 1\n" * 3)
    with pytest.raises(BadInputError, match=r"^--config-dir: 'b' in .* brings the files over "
                                            r"1024 KiB"):
        read_config_dir(str(tmp_path), "--config-dir")
    (tmp_path / "b").unlink()
    assert len(read_config_dir(str(tmp_path), "--config-dir")) == 1


def test_binary_content_is_refused(tmp_path):
    (tmp_path / "blob").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BadInputError, match="'blob' in .* is not UTF-8 text"):
        read_config_dir(str(tmp_path), "--config-dir")


@pytest.mark.parametrize("make, what", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "file").write_text("x") and p / "file", "is not a directory")])
def test_a_path_that_is_no_directory_is_refused(tmp_path, make, what):
    with pytest.raises(BadInputError, match=f"^-config-dir: .* {what}"):
        read_config_dir(str(make(tmp_path)), "-config-dir")


def test_the_classic_command_line_takes_config_dir_into_the_spec(tmp_path):
    (tmp_path / "site.config").write_text("S = 1\n")
    plan = classic_plan.make_plan(parse_args(["-annex-name", "a", "-count", "1",
                                              "-config-dir", str(tmp_path)]))
    assert plan.spec.config_files == (("site.config", b"S = 1\n"),)


def test_the_modern_command_line_takes_config_dir_into_the_spec(tmp_path):
    from condor_annex.cli.annex import spec_from_args
    from condor_annex.cli.main import build_parser
    (tmp_path / "site.config").write_text("S = 1\n")
    args = build_parser().parse_args(["create", "a", "--count", "1", "--config-dir",
                                      str(tmp_path)])
    assert spec_from_args(args).config_files == (("site.config", b"S = 1\n"),)
