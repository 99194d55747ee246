"""The seed's wheelhouse without the cloud: which requirements, the manifest, the cache.

pip runs for real here, offline (``PIP_NO_INDEX`` and a ``PIP_FIND_LINKS`` directory of tiny
wheels this file writes): nothing is fetched from a package index.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

import pytest

from condor_annex.providers.aws import seed_wheels as sw


def make_wheel(directory: Path, name: str, version: str, requires: list[str] = ()) -> Path:
    """A minimal valid pure-Python wheel (dist-info METADATA, WHEEL, RECORD) pip accepts."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + \
        "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", "")
        zf.writestr(f"{info}/METADATA", meta)
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                     "Root-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def offline_index(tmp_path, monkeypatch) -> Path:
    """pip sees only the wheels in the returned directory (no index, no other links)."""
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links


def test_the_seed_installs_the_non_extra_pins_and_pip():
    requires = ["boto3==1.43.11", "htcondor==25.14.1", "rich==15.0.0",
                'moto[server]==5.2.1; extra == "local"', "pytest==9.0.3 ; extra=='test'",
                'tomli>=1; python_version < "3.11"']
    assert sw.seed_requirements(requires) == [
        "boto3==1.43.11", "htcondor==25.14.1", "rich==15.0.0",
        'tomli>=1; python_version < "3.11"', f"pip=={sw.PIP_VERSION}"]
    assert sw.seed_requirements(None) == [f"pip=={sw.PIP_VERSION}"]


def test_requirements_are_read_from_the_wheel_shipped(tmp_path):
    # the wheel built now, not this process's metadata, which a changed pin makes stale
    wheel = make_wheel(tmp_path, "condor_annex", "9.9",
                       ["rich==15.0.0", 'pytest==9.0.3; extra == "test"'])
    assert sw.seed_requirements(sw.wheel_requirements(wheel)) == [
        "rich==15.0.0", f"pip=={sw.PIP_VERSION}"]
    bad = tmp_path / "x-1-py3-none-any.whl"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("x/__init__.py", "")
    with pytest.raises(sw.WheelhouseError, match="not a wheel"):
        sw.wheel_requirements(bad)


def test_manifest_is_what_sha256sum_checks(tmp_path):
    (tmp_path / "b.whl").write_bytes(b"bee")
    (tmp_path / "a.whl").write_bytes(b"ay" * 1000)
    wh = sw.Wheelhouse.scan(tmp_path, ["b.whl", "a.whl"])
    assert [(n, s) for n, s, _ in wh.files] == [("a.whl", 2000), ("b.whl", 3)]
    (tmp_path / "MANIFEST").write_text(wh.manifest())
    assert wh.manifest().splitlines()[0].endswith("  a.whl")
    ok = subprocess.run(["sha256sum", "--strict", "-c", "MANIFEST"], cwd=tmp_path,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (tmp_path / "b.whl").write_bytes(b"bee!")
    bad = subprocess.run(["sha256sum", "-c", "MANIFEST"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "b.whl: FAILED" in bad.stdout


def test_checkout_is_found_from_direct_url(tmp_path):
    src = tmp_path / "my checkout"
    src.mkdir()
    (src / "pyproject.toml").write_text("[project]\nname='x'\n")
    url = src.as_uri()          # percent-encodes the space
    assert sw.checkout_dir(f'{{"url": "{url}", "dir_info": {{"editable": true}}}}') == src
    assert sw.checkout_dir(f'{{"url": "{url}", "dir_info": {{}}}}') == src
    # a local archive, a VCS or web URL, no file, junk, a directory without pyproject.toml
    assert sw.checkout_dir(f'{{"url": "{url}/x.whl", "archive_info": {{}}}}') is None
    assert sw.checkout_dir('{"url": "https://example.org/x", "dir_info": {}}') is None
    assert sw.checkout_dir(None) is None
    assert sw.checkout_dir("{not json") is None
    assert sw.checkout_dir(f'{{"url": "{tmp_path.as_uri()}", "dir_info": {{}}}}') is None


def test_second_fetch_runs_no_pip_and_new_pins_replace_old_wheels(tmp_path, offline_index):
    make_wheel(offline_index, "fakepkg", "1.0", ["fakedep>=1"])
    make_wheel(offline_index, "fakedep", "1.0")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "condor_annex-0.1.0-py3-none-any.whl").write_bytes(b"ours")
    lines: list[str] = []
    names = sw.fetch_dependency_wheels(cache, ["fakepkg==1.0"], notify=lines.append)
    assert names == ["fakedep-1.0-py3-none-any.whl", "fakepkg-1.0-py3-none-any.whl"]
    assert any("Saved" in line for line in lines)          # pip's progress reached notify
    for wheel in offline_index.iterdir():                   # pip could now find nothing
        wheel.unlink()
    lines.clear()
    assert sw.fetch_dependency_wheels(cache, ["fakepkg==1.0"], notify=lines.append) == names
    assert lines == []
    # a damaged cached file is fetched again (and fails now that the index is empty)
    (cache / names[0]).write_bytes(b"damaged")
    with pytest.raises(sw.WheelhouseError):
        sw.fetch_dependency_wheels(cache, ["fakepkg==1.0"])
    # a new pin: the new set replaces the old one; our own wheel stays
    make_wheel(offline_index, "fakepkg", "2.0")
    assert sw.fetch_dependency_wheels(cache, ["fakepkg==2.0"]) == [
        "fakepkg-2.0-py3-none-any.whl"]
    assert sorted(p.name for p in cache.glob("*.whl")) == [
        "condor_annex-0.1.0-py3-none-any.whl", "fakepkg-2.0-py3-none-any.whl"]
    assert not list(tmp_path.glob(".download-*"))           # no temporary directory left


def test_pip_failure_names_what_pip_said(tmp_path, offline_index):
    cache = tmp_path / "cache"
    with pytest.raises(sw.WheelhouseError) as caught:
        sw.fetch_dependency_wheels(cache, ["nosuchpkg==1.0"])
    assert str(caught.value).startswith("pip download failed: ERROR: ")
    assert "nosuchpkg==1.0" in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == 1
    assert list(cache.iterdir()) == []                      # no stamp of a failed download


@pytest.mark.parametrize("system", [
    {"build-backend": "hatchling.build", "requires": ["hatchling"]},
    {"build-backend": "setuptools.build_meta", "requires": ["setuptools>=9999"]},
    {"build-backend": "setuptools.build_meta", "requires": ["setuptools", "nosuchpkg-xyz"]},
    {"build-backend": "setuptools.build_meta", "requires": ["setuptools<99"]},
    {},
])
def test_builds_need_pips_isolation_unless_the_backend_is_here(system):
    assert sw.backend_installed({"build-system": system}) is False
