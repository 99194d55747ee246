"""The classic command line without a cloud: prefixes, values, modes and bad input (exit 2).

Every case here fails before any cloud call (no endpoint is configured at all), so "nothing was
created" holds by construction; tests/unit/test_classic_cloud.py checks it against moto.
"""

from __future__ import annotations

import io

import pytest

from condor_annex.cli import classic
from condor_annex.cli.main import main
from condor_annex.errors import BadInputError


def plan(*argv: str) -> classic.Plan:
    return classic.make_plan(classic.parse_args(list(argv)))


# --- prefixes --------------------------------------------------------------------------------

@pytest.mark.parametrize("arg, name", [
    ("-annex", "annex-name"),
    ("-annex-name", "annex-name"),
    ("-cou", "count"),
    ("-dur", "duration"),
    ("-y", "yes"),
    ("-no", "no-owner"),
    ("-aws-on-demand", "aws-on-demand"),          # exact beats the longer options it prefixes
    ("-aws-user-data", "aws-user-data"),
    ("-aws-public-key-file", "aws-public-key-file"),
    ("-check", "check-setup"),
    ("-cl", "classads"),
    ("--count", "count"),
], ids=lambda v: v)
def test_unique_prefix_matches(arg, name):
    assert classic.match_option(arg).name == name


@pytest.mark.parametrize("arg", ["-s", "-a", "-co", "-aws", "-aws-on-demand-i", "-aws-s", "-c"])
def test_ambiguous_prefix_is_refused(arg):
    with pytest.raises(BadInputError, match=rf"^{arg}: ambiguous; it could be -"):
        classic.match_option(arg)


def test_aliases_set_the_key_files():
    p = plan("-annex-name", "a", "-count", "1", "-aws-public-key-file", "/k/a",
             "-aws-private-key-file", "/k/s")
    assert p.aws_overrides == {"access_key_file": "/k/a", "secret_key_file": "/k/s"}


# --- values ----------------------------------------------------------------------------------

def test_create_plan_defaults_and_values():
    p = plan("-annex", "web-1", "-count", "3", "-duration", "1.5", "-idle", "0.1", "-yes",
             "-tag", "project", "x", "-tag", "team", "y", "-owner", "alice, bob",
             "-aws-on-demand-instance-type", "c5.xlarge", "-aws-on-demand-ami-id",
             "ami-0123456789abcdef0")
    assert p.mode == "create" and p.yes
    s = p.spec
    assert (s.name, s.count, s.lease_seconds, s.idle_seconds) == ("web-1", 3, 5400, 360)
    assert s.tags == (("project", "x"), ("team", "y"))
    assert s.owners == ("alice", "bob")
    assert (s.instance_type, s.image_id) == ("c5.xlarge", "ami-0123456789abcdef0")


def test_defaults_are_the_originals():
    s = plan("-annex-name", "a", "-count", "1").spec
    assert (s.lease_seconds, s.idle_seconds, s.instance_type) == (3000, 900, "m4.large")
    assert len(s.owners) == 1  # the invoking user


def test_no_owner_takes_no_argument():
    # The original's -no-owner also skipped the next argument (reference §1, §10): here the
    # -count after it is still read.
    p = plan("-annex-name", "a", "-no-owner", "-count", "2")
    assert p.spec.owners == () and p.spec.count == 2
    p = plan("-no-owner", "-annex-name", "b", "-count", "1")
    assert p.spec.name == "b"


def test_user_data_forms(tmp_path):
    f = tmp_path / "ud"
    f.write_bytes(b"#!/bin/sh\n")
    assert plan("-annex-name", "a", "-count", "1", "-aws-user-data", "x").spec.user_data == b"x"
    assert plan("-annex-name", "a", "-count", "1", "-aws-user-data-file",
                str(f)).spec.user_data == b"#!/bin/sh\n"
    # The default form applies only when no other user data is given.
    assert plan("-annex-name", "a", "-count", "1", "-aws-default-user-data", "d").spec \
        .user_data == b"d"
    assert plan("-annex-name", "a", "-count", "1", "-aws-user-data", "x",
                "-aws-default-user-data", "d").spec.user_data == b"x"


def test_urls_map_to_the_endpoint_override():
    p = plan("-annex-name", "a", "-count", "1", "-aws-ec2-url", "http://127.0.0.1:5000",
             "-aws-s3-url", "http://127.0.0.1:5000")
    assert p.aws_overrides == {"endpoint_url": "http://127.0.0.1:5000"}


def test_on_demand_overrides_become_knobs():
    p = plan("-annex-name", "a", "-count", "1", "-aws-on-demand-security-group-ids",
             "sg-0abc", "-aws-on-demand-key-name", "mykey",
             "-aws-on-demand-instance-profile-arn", "arn:aws:iam::123:instance-profile/p",
             "-aws-on-demand-lease-function-arn", "arn:aws:lambda:us-east-1:123:function:f")
    assert p.knob_overrides == {
        "ANNEX_DEFAULT_ODI_SECURITY_GROUP_IDS": "sg-0abc",
        "ANNEX_DEFAULT_ODI_KEY_NAME": "mykey",
        "ANNEX_DEFAULT_ODI_INSTANCE_PROFILE_ARN": "arn:aws:iam::123:instance-profile/p",
        "ANNEX_DEFAULT_ODI_LEASE_FUNCTION_ARN": "arn:aws:lambda:us-east-1:123:function:f"}


# --- modes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, mode", [
    (["-annex-name", "a", "-count", "1"], "create"),
    (["-annex-name", "a", "-duration", "2"], "update"),
    (["-annex-name", "a", "off"], "off"),
    (["-status"], "status"),
    (["-status", "-annex-name", "a", "-classads"], "status"),
    (["-annex-name", "a", "status"], "status"),
    (["-setup"], "setup"),
    (["-setup", "FROM", "INSTANCE"], "setup"),
    (["-setup", "/a", "/s"], "setup"),
    (["-check-setup"], "check-setup"),
    (["-help"], "help"),
    (["-annex-name", "a", "-count", "1", "-help"], "help"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_modes(argv, mode):
    assert plan(*argv).mode == mode


def test_setup_key_files_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = plan("-setup", "pub", "priv")
    assert p.setup_key_files == (str(tmp_path / "pub"), str(tmp_path / "priv"))
    assert p.aws_overrides["access_key_file"] == str(tmp_path / "pub")


# --- bad input: one line naming the flag, exit status 2 --------------------------------------

BAD = [
    # (argv, start of the one-line message)
    (["-bogus"], "-bogus: unknown option"),
    (["-annex-name", "a", "-count", "1", "-frobnicate"], "-frobnicate: unknown option"),
    (["-annex-name", "a", "-count"], "-count: needs 1 value"),
    (["-annex-name"], "-annex-name: needs 1 value"),
    (["-annex-name", "-count", "2"], "-annex-name: needs 1 value"),
    (["-annex-name", "a", "-count", "1", "-tag", "x"], "-tag: needs 2 value"),
    (["-s"], "-s: ambiguous"),
    (["-annex-name", "a", "-count", "x"], "-count: 'x' is not a whole number"),
    (["-annex-name", "a", "-count", "-3"], "-count: -3 is out of range"),
    (["-annex-name", "a", "-count", "0"], "-count: 0 is out of range"),
    (["-annex-name", "a", "-count", "1.5"], "-count: '1.5' is not a whole number"),
    (["-annex-name", "a", "-count", "1", "-duration", "abc"], "-duration: 'abc' is not a num"),
    (["-annex-name", "a", "-count", "1", "-duration", "-1"], "-duration: '-1' is not a num"),
    (["-annex-name", "a", "-count", "1", "-duration", "0"], "-duration: '0' must be more"),
    (["-annex-name", "a", "-count", "1", "-duration", "1000"], "-duration: '1000' must be"),
    (["-annex-name", "a", "-count", "1", "-idle", "x"], "-idle: 'x' is not a number"),
    (["-count", "2"], "-annex-name: starting an annex needs a name"),
    (["-annex-name", "a" * 28, "-count", "1"], "-annex-name: '" + "a" * 28 + "' has 28 char"),
    (["-annex-name", "my_annex", "-count", "1"], "-annex-name: 'my_annex' may use only"),
    (["-annex-name", "a b", "-count", "1"], "-annex-name: 'a b' may use only"),
    (["-annex-name", "a", "-slots", "4", "-count", "1"], "-slots: give -count N"),
    (["-annex-name", "a", "-count", "1", "-aws-spot-fleet"],
     "-count: a spot fleet's size is its weighted capacity"),
    (["-annex-name", "a", "-count", "1", "-config-dir", "/nonexistent/d"],
     "-config-dir: '/nonexistent/d' does not exist"),
    (["-annex-name", "a", "-count", "1", "-owner", " , "], "-owner: give at least one user"),
    (["-annex-name", "a", "-count", "1", "-owner", "x", "-no-owner"], "-no-owner: cannot be"),
    (["-annex-name", "a", "-count", "1", "-tag", "aws:x", "v"], "-tag: 'aws:x' is reserved"),
    (["-annex-name", "a", "-count", "1", "-tag", "htcondor:AnnexName", "b"], "-tag: 'htcondor"),
    (["-annex-name", "a", "-count", "1", "-aws-region", "mars"], "-aws-region: 'mars' is not"),
    (["-annex-name", "a", "-count", "1", "-aws-on-demand-instance-type", "big"],
     "-aws-on-demand-instance-type: 'big' is not"),
    (["-annex-name", "a", "-count", "1", "-aws-on-demand-ami-id", "ubuntu"],
     "-aws-on-demand-ami-id: 'ubuntu' is not an AMI"),
    (["-annex-name", "a", "-count", "1", "-aws-on-demand-security-group-ids", "sg-1,sg-2"],
     "-aws-on-demand-security-group-ids: give one"),
    (["-annex-name", "a", "-count", "1", "-aws-on-demand-lease-function-arn", "f"],
     "-aws-on-demand-lease-function-arn: 'f' is not a"),
    (["-annex-name", "a", "-count", "1", "-aws-ec2-url", "ftp://x"], "-aws-ec2-url: 'ftp://x'"),
    (["-annex-name", "a", "-count", "1", "-aws-ec2-url", "http://a", "-aws-s3-url", "http://b"],
     "-aws-ec2-url and -aws-s3-url: give the same URL"),
    (["-annex-name", "a", "-count", "1", "-aws-user-data", "x", "-aws-user-data-file", "/f"],
     "-aws-user-data: give -aws-user-data or"),
    (["-annex-name", "a", "-count", "1", "-aws-user-data-file", "/nonexistent/ud"],
     "-aws-user-data-file: cannot read '/nonexistent/ud'"),
    (["-annex-name", "a", "-count", "1", "-count", "2"], "-count: given more than once"),
    (["-annex-name", "a", "-duration", "1", "-idle", "1"], "-idle: cannot be changed"),
    (["-duration", "1"], "-duration: to update a lease also give -annex-name"),
    (["-annex-name", "a"], "nothing to do"),
    (["-yes"], "nothing to do"),
    (["-status", "-count", "1"], "-status and -count cannot be combined"),
    (["-setup", "-check-setup"], "-setup and -check-setup cannot be combined"),
    (["-setup", "only-one"], "-setup: give both key files"),
    (["-annex-name", "a", "-count", "1", "-classads"], "-classads: only with -status"),
    (["-yes", "off"], "off: give the annex to end"),
    (["-annex-name", "a", "off", "-fast"], "off: unexpected arguments after 'off'"),
    (["-annex-name", "a", "stray", "-count", "1"], "'stray': unexpected argument"),
    (["-annex-name", "a-", "-count", "1", "-annex-name", "b"], "-annex-name: given more"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(argv, message, user_config, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("condor_annex: " + message), err


def test_bad_input_is_found_before_reading_the_config(user_config, capsys):
    # No setup at all: the flag error still wins (validation precedes everything).
    assert main(["-annex-name", "bad_name", "-count", "1"]) == 2
    assert "-annex-name" in capsys.readouterr().err


def test_help_prints_usage_and_exits_1(user_config, capsys):
    assert main(["-help"]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("Usage: condor_annex") and "-annex-name" in out and err == ""


def test_missing_setup_is_bad_input(user_config, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("yes\n"))
    for argv in (["-annex-name", "a", "-count", "1", "-yes"],
                 ["-annex-name", "a", "-duration", "1"],
                 ["-annex-name", "a", "off"],
                 ["-check-setup"]):
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert err.count("\n") == 1 and "run 'condor_annex setup' first" in err, err
        assert "Will request" not in out  # refused before the prompt


def test_confirm_accepts_only_yes():
    spec = plan("-annex-name", "a", "-count", "2").spec
    assert classic.confirm(spec, read=lambda: "yes\n")
    assert classic.confirm(spec, read=lambda: "YES\n")
    for answer in ("no\n", "y\n", "", "yess\n"):
        assert not classic.confirm(spec, read=lambda a=answer: a)


def test_classads_text_format():
    # As the original's printClassAds (StatusReply.cpp): attributes in case-insensitive order,
    # lists as ClassAd lists, no list for InPool, Name tagged with the key file's MD5; without
    # a name each ad is followed by a blank line.
    states = {"i-1": "in-pool", "i-3": "running", "i-4": "running", "i-5": "shutting-down",
              "i-2": "terminated"}
    annexes = {"i-1": "a", "i-3": "a", "i-4": "a", "i-5": "a", "i-2": "b"}
    out, err = classic.classads_text(states, annexes, None, "0" * 32)
    ads = out.split("\n\n")
    assert err == "" and ads[0].splitlines() == [
        'AnnexID = "a"', 'MyType = "Annex"', f'Name = "a [{"0" * 32}]"',
        "NumInstancesInPool = 1", "NumInstancesRunning = 2", "NumInstancesShuttingDown = 1",
        'RunningInstancesList = { "i-3","i-4" }', 'ShuttingDownInstancesList = { "i-5" }',
        "TotalInstances = 4"]
    assert ads[1].splitlines()[:1] == ['AnnexID = "b"'] and out.endswith("\n\n")
    out, err = classic.classads_text({"i-3": "running"}, {"i-3": "a"}, "A", None)
    assert out == "" and err == "Failed to hash the access (public) key file, aborting.\n"


def test_status_word_keeps_condor_status_arguments():
    # The original passed what follows 'status' on to condor_status.
    assert plan("-annex-name", "a", "status", "-af", "Name").status_args == ("-af", "Name")
    assert plan("-annex-name", "a", "status").status_args == ()
    assert plan("-status", "-annex-name", "a").status_args is None
