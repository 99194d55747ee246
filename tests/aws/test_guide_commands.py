"""Every command of docs/aws.md is a command the product takes: each fenced ``sh`` line that
runs ``condor_annex`` parses with the real command-line parser, the policy path it prints
exists, and the guide's own sequence runs on the emulator (moto behind the AWS gateway, which
answers Service Quotas, policy simulation, the probe and Debian's public image parameter)."""

from __future__ import annotations

import io
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from condor_annex import config
from condor_annex.cli.main import build_parser, main

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "aws.md"


def guide_commands() -> list[str]:
    """The lines of the guide's fenced ``sh`` blocks, in order."""
    blocks = re.findall(r"```sh\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip()]


def annex_commands() -> list[list[str]]:
    return [shlex.split(c)[1:] for c in guide_commands() if c.startswith("condor_annex ")]


def test_guide_is_linked_from_the_readme():
    readme = (GUIDE.parents[1] / "README.md").read_text()
    assert "(docs/aws.md)" in readme


def test_guide_has_commands_for_every_step():
    verbs = {argv[0] for argv in annex_commands()}
    assert {"setup", "check-setup", "create", "status", "logs", "extend", "off"} <= verbs
    assert ["setup", "--remove"] in annex_commands()


@pytest.mark.parametrize("argv", annex_commands(), ids=" ".join)
def test_each_condor_annex_command_parses(argv):
    args = build_parser().parse_args(argv)   # BadInputError (exit 2) on anything unknown
    assert callable(args.func)


def test_the_printed_policy_path_exists_and_is_the_aws_cli_argument():
    line = next(c for c in guide_commands() if c.startswith("python3 -c"))
    code = shlex.split(line)[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert Path(out).is_file() and out.endswith("condor-annex-user.json")
    assert any(code in c and "create-policy" in c for c in guide_commands())


@pytest.fixture
def emulator(account, gateway, tmp_path, monkeypatch):
    """The CLI on the gateway in front of moto, with a reachable collector, a default VPC
    routed to the internet, and Debian 13's public parameter pointing at an AMI moto knows."""
    from condor_annex.providers.aws.session import make_client
    from condor_annex.providers.local.account import prepare_account
    from condor_annex.providers.local.strict_ssm import PublicParameters
    from tests.conftest import MOTO_AMI
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    config.write_block("test", {**config.read_knobs(),
                                "ANNEX_DEFAULT_ODI_IMAGE_ID": "",
                                "ANNEX_AWS_ENDPOINT_URL": gateway.url,
                                "ANNEX_LISTING_LAG": "0",
                                "ANNEX_COLLECTOR": "127.0.0.1:%d"
                                                   % listener.getsockname()[1]})
    gateway.profile_age_s = 0.5
    for arch in ("amd64", "arm64"):
        gateway.rule(PublicParameters).publish(f"/aws/service/debian/release/13/latest/{arch}",
                                               MOTO_AMI)
    # As the guide leaves an account: its IAM user with the shipped policy, a route out.
    keys = prepare_account(make_client(account, "iam"), make_client(account, "ec2"))
    for path, value in zip((account.access_key_file, account.secret_key_file), keys):
        with open(path, "w") as f:
            f.write(value + "\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    yield account
    listener.close()


def test_guide_sequence_runs_on_the_emulator(emulator, capsys):
    """The guide's condor_annex commands in order, as the guide's IAM user.  The emulator
    cannot join a node to a pool nor boot an image builder (the local cloud's end-to-end tests,
    tests/e2e/test_stock_boot.py, run ``create --wait``, ``logs`` and ``image build``), so
    ``--wait`` is dropped and ``image build`` skipped; every command must exit 0 and every
    preflight row must be OK."""
    import json
    for argv in annex_commands():
        argv = [a for a in argv if a != "--wait"]
        if argv[:2] == ["image", "build"]:
            continue
        if argv[:2] == ["check-setup", "--preflight"] and "--json" in argv:
            code = main(argv)
            out, err = capsys.readouterr()
            rows = json.loads(out)
            assert [r for r in rows if not r["ok"]] == [], rows
            continue
        if argv[:2] == ["check-setup", "--preflight"]:
            main(argv)
            capsys.readouterr()
            continue
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0, (argv, out, err)
