"""Uploading the seed's wheelhouse to setup's bucket (moto server): keys, sha256 metadata,
MANIFEST, nothing put twice, changed files put again, stale files removed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from condor_annex.providers.aws import seed_wheels as sw
from condor_annex.providers.aws.session import (add_call_listener, make_client,
                                                remove_call_listener)

#: The user's real cache (read at import, before fixtures point the user config elsewhere).
REAL_CACHE = sw.default_cache_dir()


@pytest.fixture
def calls():
    """Names of the AWS calls made while the test runs (``"s3.PutObject"``, ...)."""
    seen: list[str] = []
    add_call_listener(seen.append)
    yield seen
    remove_call_listener(seen.append)


def fake_wheelhouse(directory: Path, contents: dict[str, bytes]) -> sw.Wheelhouse:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in contents.items():
        (directory / name).write_bytes(data)
    return sw.Wheelhouse.scan(directory, contents)


def bucket_files(aws, bucket: str, prefix: str) -> dict[str, tuple[bytes, dict]]:
    s3 = make_client(aws, "s3")
    out = {}
    for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []):
        got = s3.get_object(Bucket=bucket, Key=obj["Key"])
        out[obj["Key"][len(prefix):]] = (got["Body"].read(), got["Metadata"])
    return out


def test_upload_puts_each_file_once_with_a_manifest_sha256sum_accepts(aws, outputs, tmp_path,
                                                                       calls):
    wheels = {"a-1.0-py3-none-any.whl": b"a" * 5000, "b-2.0-py3-none-any.whl": b"bee",
              "pip-26.3-py3-none-any.whl": b"pip"}
    wh = fake_wheelhouse(tmp_path / "wh", wheels)
    prefix = sw.upload_wheelhouse(aws, outputs.bucket, wh, version="7.7.7")
    assert prefix == "seed/7.7.7/"
    got = bucket_files(aws, outputs.bucket, prefix)
    assert set(got) == set(wheels) | {"MANIFEST"}
    for name, size, sha in wh.files:
        assert got[name] == (wheels[name], {"sha256": sha})
    # what the seed does: fetch the prefix, check it with sha256sum
    fetched = tmp_path / "fetched"
    fetched.mkdir()
    for name, (data, _meta) in got.items():
        (fetched / name).write_bytes(data)
    check = subprocess.run(["sha256sum", "--strict", "-c", "MANIFEST"], cwd=fetched,
                           capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.count(": OK") == 3, check.stdout

    calls.clear()
    sw.upload_wheelhouse(aws, outputs.bucket, wh, version="7.7.7")
    assert "s3.PutObject" not in calls and "s3.DeleteObjects" not in calls

    # a changed wheel (same size, new bytes) and a wheel gone from the set
    calls.clear()
    del wheels["a-1.0-py3-none-any.whl"]
    wheels["b-2.0-py3-none-any.whl"] = b"BEE"
    wh2 = fake_wheelhouse(tmp_path / "wh", wheels)
    sw.upload_wheelhouse(aws, outputs.bucket, wh2, version="7.7.7")
    assert calls.count("s3.PutObject") == 2                 # b's wheel and MANIFEST
    got = bucket_files(aws, outputs.bucket, prefix)
    assert set(got) == {"b-2.0-py3-none-any.whl", "pip-26.3-py3-none-any.whl", "MANIFEST"}
    assert got["b-2.0-py3-none-any.whl"][0] == b"BEE"
    assert got["MANIFEST"][0].decode() == wh2.manifest()
    # another version's wheelhouse is left alone
    assert bucket_files(aws, outputs.bucket, "seed/7.7.8/") == {}


def test_a_file_changed_after_the_build_is_refused(aws, outputs, tmp_path, calls):
    wh = fake_wheelhouse(tmp_path / "wh", {"a-1.0-py3-none-any.whl": b"one"})
    (tmp_path / "wh" / "a-1.0-py3-none-any.whl").write_bytes(b"two")
    with pytest.raises(sw.WheelhouseError, match="changed since the wheelhouse was built"):
        sw.upload_wheelhouse(aws, outputs.bucket, wh)
    assert "s3.PutObject" not in calls


def test_the_real_cached_wheelhouse_uploads(aws, outputs):
    stamp = REAL_CACHE / "wheelhouse.json"
    if not stamp.is_file():
        pytest.skip(f"no cached seed wheels in {REAL_CACHE} (condor_annex builds them)")
    names = [name for name, _size, _sha in json.loads(stamp.read_text())["files"]]
    wh = sw.Wheelhouse.scan(REAL_CACHE, names)
    prefix = sw.upload_wheelhouse(aws, outputs.bucket, wh)
    s3 = make_client(aws, "s3")
    keys = {o["Key"]: o["Size"] for o in
            s3.list_objects_v2(Bucket=outputs.bucket, Prefix=prefix)["Contents"]}
    assert keys == {prefix + name: size for name, size, _sha in wh.files} | \
        {prefix + "MANIFEST": len(wh.manifest())}
    assert any(name.startswith("htcondor-") and "cp313" in name for name in names)
    assert f"pip-{sw.PIP_VERSION}-py3-none-any.whl" in names
