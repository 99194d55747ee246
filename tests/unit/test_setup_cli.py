"""``setup``, ``check-setup`` and ``setup --remove`` through the command line, against the moto
server: what the user sees (exit status, text) and what is left in the endpoint and the user
config afterwards."""

from __future__ import annotations

import json

import pytest

from condor_annex.cli.main import main
from condor_annex.providers.aws.session import make_client


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def _stacks(aws) -> list[str]:
    cfn = make_client(aws, "cloudformation")
    return [s["StackName"] for s in cfn.describe_stacks()["Stacks"]
            if s["StackStatus"] != "DELETE_COMPLETE"]


def _buckets(aws) -> list[str]:
    return [b["Name"] for b in make_client(aws, "s3").list_buckets()["Buckets"]]


def _key_pairs(aws) -> list[str]:
    return [k["KeyName"] for k in make_client(aws, "ec2").describe_key_pairs()["KeyPairs"]]


def test_setup_check_and_remove(account, user_config, capsys):
    assert main(["setup", "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert _stacks(account) == [made["stack_name"]] and made["bucket"] in _buckets(account)
    assert "# BEGIN condor-annex setup" in user_config.read_text()
    assert main(["check-setup", "--json"]) == 0
    capsys.readouterr()

    assert main(["setup", "--remove"]) == 0

    out = " ".join(capsys.readouterr().out.split())    # rich wraps long lines
    assert out.startswith(f"Removed setup in us-east-1: stack {made['stack_name']}, bucket "
                          f"{made['bucket']}"), out
    assert _stacks(account) == [] and made["bucket"] not in _buckets(account)
    assert made["key_name"] not in _key_pairs(account)
    assert "condor-annex setup" not in user_config.read_text()
    assert main(["check-setup"]) == 2                    # nothing to check: not set up
    assert "run 'condor_annex setup'" in capsys.readouterr().err


def test_remove_is_refused_while_an_annex_has_a_lease(account, capsys):
    assert main(["setup"]) == 0
    assert main(["create", "keep", "--count", "1", "--no-owner"]) == 0
    capsys.readouterr()

    code = main(["setup", "--remove"])

    err = " ".join(capsys.readouterr().err.split())
    assert code != 0 and "1 annex lease(s) remain (keep)" in err, err
    assert "setup --remove --force" in err
    assert len(_stacks(account)) == 1                    # nothing was deleted
    assert main(["check-setup"]) == 0
    assert main(["off", "keep"]) == 0
    assert main(["setup", "--remove"]) == 0
    assert _stacks(account) == []


def test_force_without_remove_is_bad_input(account, capsys):
    assert main(["setup", "--force"]) == 2
    assert capsys.readouterr().err.strip() == ("condor_annex: --force: only with --remove, e.g. "
                                               "condor_annex setup --remove --force")
    assert _stacks(account) == [] and _buckets(account) == []
