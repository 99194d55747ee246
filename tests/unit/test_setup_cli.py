"""``setup``, ``check-setup`` and ``setup --remove`` through the command line, against the moto
server: what the user sees (exit status, text) and what is left in the endpoint and the user
config afterwards."""

from __future__ import annotations

import json

import pytest

from condor_annex.cli.main import main
from condor_annex.providers.aws.session import make_client


#: check-setup rows of the resources moto's CloudFormation skips (with only a warning).
MOTO_SKIPS = ("lease retries (event invoke config)",
              "lease failure alarm condor-annex-lease-failures",
              "lease sweep schedule condor-annex-lease-sweep")


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
    main(["check-setup", "--json"])
    rows = {r["resource"]: r["ok"] for r in json.loads(capsys.readouterr().out)}
    assert len(rows) == 15   # with the agent row
    assert [name for name, ok in rows.items() if not ok] == list(MOTO_SKIPS)

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
    main(["check-setup", "--json"])
    assert all(r["ok"] for r in json.loads(capsys.readouterr().out)
               if r["resource"] not in MOTO_SKIPS)
    assert main(["off", "keep"]) == 0
    assert main(["setup", "--remove"]) == 0
    assert _stacks(account) == []


def test_force_without_remove_is_bad_input(account, capsys):
    assert main(["setup", "--force"]) == 2
    assert capsys.readouterr().err.strip() == ("condor_annex: --force: only with --remove, e.g. "
                                               "condor_annex setup --remove --force")
    assert _stacks(account) == [] and _buckets(account) == []


@pytest.mark.xfail(strict=True, reason="moto gap: its CloudFormation skips AWS::Scheduler::"
                   "Schedule, AWS::CloudWatch::Alarm and AWS::Lambda::EventInvokeConfig with a "
                   "warning, so check-setup finds them missing; the local cloud's gateway "
                   "creates them")
def test_check_setup_after_setup_exits_0(account, capsys):
    assert main(["setup"]) == 0
    assert main(["check-setup"]) == 0


def test_setup_upgrades_a_stack_from_an_older_version(account, capsys, monkeypatch):
    from condor_annex.providers.aws import setup as aws_setup

    shipped = aws_setup.template_source()
    with monkeypatch.context() as older:
        older.setattr(aws_setup, "template_source",
                      lambda: shipped.replace("      Timeout: 300\n", "      Timeout: 60\n"))
        assert main(["setup"]) == 0
    capsys.readouterr()
    main(["check-setup", "--json"])
    stack = json.loads(capsys.readouterr().out)[0]
    assert stack["resource"] == "stack condor-annex" and not stack["ok"]
    assert "deployed from another condor-annex" in stack["detail"]
    assert "run 'condor_annex setup' to update it" in stack["detail"]

    assert main(["setup"]) == 0

    out = " ".join(capsys.readouterr().out.split())
    assert ("Updated stack condor-annex to this version's template: Modify LeaseFunction "
            "(AWS::Lambda::Function).") in out, out
    assert main(["-setup"]) == 0                         # classic: current now, nothing to say
    assert "Updated stack" not in capsys.readouterr().out


def test_check_setup_when_the_stack_was_deleted_by_hand(account, capsys):
    assert main(["setup"]) == 0
    make_client(account, "cloudformation").delete_stack(StackName="condor-annex")
    capsys.readouterr()

    assert main(["check-setup"]) == 2

    err = capsys.readouterr().err
    assert err == ("condor_annex: check-setup: the setup recorded for us-east-1 (stack "
                   "condor-annex) no longer exists; run 'condor_annex setup'\n"), err
