"""On the moto server: what ``create`` puts in an annex's bundle so that its owner can run
HTCondor's admin tools on its nodes (its own signing key, the config that trusts it, the
``--config-dir`` files), the owner's token file (mode 600, removed when the annex ends), and
``-config-dir`` bad input that creates nothing (issue 13 item 3)."""

from __future__ import annotations

import io
import stat
import tarfile

import pytest

from condor_annex import config
from condor_annex.cli.main import main
from condor_annex.model import TAG_ANNEX_NAME
from condor_annex.pool import annex_admin
from condor_annex.providers.aws.session import make_client
from condor_annex.service.context import Context


@pytest.fixture
def cloud(account, outputs, tmp_path, monkeypatch):
    """A set-up account on moto; the owner's token directory is ``tmp_path/tokens.d``."""
    config.write_block("setup", config.setup_knobs(outputs))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    return outputs


def _run(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def _bundle(aws, outputs, name: str) -> dict[str, tuple[bytes, int]]:
    body = make_client(aws, "s3").get_object(Bucket=outputs.bucket,
                                             Key=f"config-{name}.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        return {m.name: (tar.extractfile(m).read(), m.mode) for m in tar.getmembers()}


def _token_dir(tmp_path):
    return tmp_path / "tokens.d"


def _nothing_in_the_cloud(aws, outputs) -> None:
    s3 = make_client(aws, "s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=outputs.bucket).get("Contents", [])]
    assert [k for k in keys if k.startswith("config-")] == []
    ec2 = make_client(aws, "ec2")
    live = ec2.describe_instances(Filters=[
        {"Name": "tag-key", "Values": [TAG_ANNEX_NAME]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]}])["Reservations"]
    assert live == []
    schedules = make_client(aws, "scheduler").list_schedules(NamePrefix="annex-lease-")
    assert schedules["Schedules"] == []


def test_create_puts_the_annex_key_and_config_dir_in_the_bundle_and_the_token_mode_600(
        cloud, account, capsys, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "zz-last.config").write_text("ZZ = 1\n")
    (site / "00-first.config").write_text("START = FALSE\n")
    (site / "backup.config~").write_text("IGNORED = 1\n")
    code, err = _run(capsys, "create", "adm", "--count", "1", "--config-dir", str(site))
    assert code == 0, err

    files = _bundle(account, cloud, "adm")
    key, mode = files["passwords.d/annex-adm"]
    assert mode == 0o600 and len(key) >= 64
    cfg = files["config.d/50-annex.config"][0].decode()
    identity = f"{annex_admin.local_owner()}@annex-adm"
    assert f"ALLOW_ADMINISTRATOR = {identity}/*, condor@pool.test/*, root@pool.test/*\n" in cfg
    assert "ALLOW_CONFIG = $(ALLOW_ADMINISTRATOR)\nENABLE_RUNTIME_CONFIG = True\n" in cfg
    assert sorted(n for n in files if n.startswith("config.d/")) == [
        "config.d/50-annex.config", "config.d/60-user-00-first.config",
        "config.d/60-user-zz-last.config"]
    assert files["config.d/60-user-00-first.config"][0] == b"START = FALSE\n"

    token_file = _token_dir(tmp_path) / "condor-annex-adm"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    head, body, sig = token.split(".")
    assert annex_admin.sign(key.decode(), f"{head}.{body}") == sig   # signed by that key
    assert key.decode() not in token and key.decode() not in err

    code, err = _run(capsys, "off", "adm", "--grace", "0s")
    assert code == 0, err
    assert not token_file.exists()


def test_adding_and_extending_keep_the_key_the_files_and_a_working_token(cloud, account, capsys,
                                                                       tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.config").write_text("A = 1\n")
    assert _run(capsys, "create", "keep", "--count", "1", "--config-dir", str(site))[0] == 0
    first = _bundle(account, cloud, "keep")
    assert _run(capsys, "create", "keep", "--count", "1")[0] == 0
    assert _run(capsys, "extend", "keep", "2h")[0] == 0
    later = _bundle(account, cloud, "keep")
    assert later["passwords.d/annex-keep"] == first["passwords.d/annex-keep"]
    assert later["config.d/60-user-a.config"] == first["config.d/60-user-a.config"]
    token = (_token_dir(tmp_path) / "condor-annex-keep").read_text().strip()
    head, body, sig = token.split(".")
    assert annex_admin.sign(later["passwords.d/annex-keep"][0].decode(), f"{head}.{body}") == sig
    assert _run(capsys, "off", "keep", "--grace", "0s")[0] == 0


def test_a_new_annex_of_the_same_name_gets_a_new_key(cloud, account, capsys):
    assert _run(capsys, "create", "again", "--count", "1")[0] == 0
    old = _bundle(account, cloud, "again")["passwords.d/annex-again"]
    assert _run(capsys, "off", "again", "--grace", "0s")[0] == 0
    assert _run(capsys, "create", "again", "--count", "1")[0] == 0
    assert _bundle(account, cloud, "again")["passwords.d/annex-again"] != old
    assert _run(capsys, "off", "again", "--grace", "0s")[0] == 0


def test_the_reconciler_ending_removes_the_token(cloud, account, capsys, tmp_path):
    from condor_annex.reconciler import ending
    assert _run(capsys, "create", "recon", "--count", "1")[0] == 0
    token_file = _token_dir(tmp_path) / "condor-annex-recon"
    assert token_file.exists()
    ctx = Context.load()
    # The reconciler's EndAnnex passes no knobs: the hook reads the user's configuration.
    ending.end_annex_resources(ctx.provider(ctx.setup_outputs()), "recon", cloud.bucket)
    assert not token_file.exists()


@pytest.mark.parametrize("argv", [
    ["create", "bad", "--count", "1", "--config-dir"],
    ["-annex-name", "bad", "-count", "1", "-yes", "-config-dir"]])
@pytest.mark.parametrize("make, what", [
    (lambda d: (d / "link.config").symlink_to("/etc/hostname"), "'link.config' in .* is a "
                                                                 "symlink"),
    (lambda d: (d / "sub").mkdir(), "'sub' in .* is a subdirectory"),
    (lambda d: (d / "big").write_bytes(b"#" * (1024 * 1024 + 1)), "'big' in .* brings the "
                                                                    "files over 1024 KiB")])
def test_a_bad_config_dir_is_one_line_exit_2_and_nothing_is_created(
        cloud, account, capsys, tmp_path, argv, make, what):
    import re
    site = tmp_path / "site"
    site.mkdir()
    make(site)
    code, err = _run(capsys, *argv, str(site))
    flag = argv[-1]
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.search(f"{flag}: {what}", lines[0]), err
    _nothing_in_the_cloud(account, cloud)
    assert not _token_dir(tmp_path).exists()
