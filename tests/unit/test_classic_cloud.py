"""Classic invocations run through ``cli.main.main`` against the moto server.

Each test checks the exit status, the text, and what our code left in the endpoint (instances
tagged ``htcondor:AnnexName``, the lease schedule ``annex-lease-<name>``, the bundle
``config-<name>.tar.gz``), read back with boto3.  The pool's token tool is a test double that
prints a fake JWT; the collector is never contacted by create.

Regression tests for the original's defects (reference §10) are named ``test_regression_*``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import tarfile
import time
from dataclasses import dataclass

import pytest

from condor_annex import config
from condor_annex.cli.main import main
from condor_annex.model import TAG_ANNEX_NAME, TAG_ANNEX_OWNER, TAG_LAUNCH_TOKEN, TAG_LEASE_END
from condor_annex.providers.aws.session import make_client

#: An AMI moto knows (its bundled Amazon images).
#: An AMI moto knows; the ``account`` fixture makes it the default.
MOTO_AMI = "ami-03cf127a"
#: A well-formed security group id that does not exist: moto's RunInstances rejects it.
MISSING_SG = "sg-0123456789abcdef0"


@dataclass
class Cloud:
    """The endpoint, seen through boto3, and the test's working directory."""

    aws: object
    outputs: object
    cwd: object

    def instances(self, annex: str | None = None, *, live: bool = True) -> dict[str, dict]:
        ec2 = make_client(self.aws, "ec2")
        filters = [{"Name": "tag-key", "Values": [TAG_ANNEX_NAME]}]
        found = {}
        for r in ec2.describe_instances(Filters=filters)["Reservations"]:
            for i in r["Instances"]:
                tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
                if annex is not None and tags.get(TAG_ANNEX_NAME) != annex:
                    continue
                if live and i["State"]["Name"] not in ("pending", "running"):
                    continue
                found[i["InstanceId"]] = {**i, "TagMap": tags}
        return found

    def schedules(self) -> list[str]:
        sch = make_client(self.aws, "scheduler")
        return [s["Name"] for s in sch.list_schedules()["Schedules"]]

    def schedule_input(self, annex: str) -> dict:
        sch = make_client(self.aws, "scheduler")
        return json.loads(sch.get_schedule(Name=f"annex-lease-{annex}")["Target"]["Input"])

    def bundles(self) -> list[str]:
        s3 = make_client(self.aws, "s3")
        return [o["Key"] for o in
                s3.list_objects_v2(Bucket=self.outputs.bucket).get("Contents", [])
                if o["Key"].startswith("config-")]   # not setup's agent/

    def bundle_config(self, annex: str) -> str:
        s3 = make_client(self.aws, "s3")
        body = s3.get_object(Bucket=self.outputs.bucket, Key=f"config-{annex}.tar.gz")["Body"]
        with tarfile.open(fileobj=io.BytesIO(body.read()), mode="r:gz") as tar:
            return tar.extractfile("config.d/50-annex.config").read().decode()

    def empty(self) -> bool:
        return not self.instances(live=False) and not self.schedules() and not self.bundles()


@pytest.fixture
def cloud(account, outputs, tmp_path, monkeypatch) -> Cloud:
    """A set-up account on moto, the user config pointing at it, an empty cwd, stdin empty."""
    config.write_block("setup", config.setup_knobs(outputs))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    return Cloud(account, outputs, cwd)


def run(argv: list[str], capsys, stdin: str | None = None, monkeypatch=None):
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --- the table of invocations ----------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One classic invocation and what it must leave behind.

    Attributes:
        argv: the command line.
        code: exit status.
        out / err: regexes that stdout / stderr must match (search).
        before: command lines run first (each must exit 0).
        stdin: what the user types.
        live: annex -> live instances expected afterwards.
        lease: annex -> expected lease length in seconds (±60), or None for "no lease".
        bundles: the bundle keys expected in the bucket.
    """

    id: str
    argv: tuple[str, ...]
    code: int
    out: str = ""
    err: str = "^$"
    before: tuple[tuple[str, ...], ...] = ()
    stdin: str = ""
    live: tuple[tuple[str, int], ...] = ()
    lease: tuple[tuple[str, int | None], ...] = ()
    bundles: tuple[str, ...] = ()


START = ("-annex-name", "a1", "-count", "2", "-yes")
STARTED = (r"^Starting annex\.\.\.\nAnnex started\. Its identity with the cloud provider is "
           r"'a1_[0-9a-f]{32}'\. It will take about three minutes for the new machines to join "
           r"the pool\.\n$")

CASES = [
    Case("create", START, 0, STARTED, live=(("a1", 2),), lease=(("a1", 3000),),
         bundles=("config-a1.tar.gz",)),
    Case("create by prefixes", ("-annex", "a1", "-cou", "1", "-y", "-dur", "0.5", "-id", "0.1"),
         0, STARTED, live=(("a1", 1),), lease=(("a1", 1800),), bundles=("config-a1.tar.gz",)),
    Case("create after yes", ("-annex-name", "a1", "-count", "1"), 0,
         r"^Will request 1 m4\.large on-demand instance for 0\.83 hours\. Each instance will "
         r"terminate after being idle for 0\.25 hours\.\n"
         # issue 12: the estimate on a line of its own (the snapshot's price: plain moto)
         r"Estimated cost for the whole lease: 1 x m4\.large at \$[0-9.]+/h each \(On-Demand\) "
         r"for 0\.83 hours = \$[0-9.]+[^\n]*\.\nIs that OK\? \(Type 'yes' or 'no'\): "
         r"Starting annex", stdin="yes\n", live=(("a1", 1),), lease=(("a1", 3000),),
         bundles=("config-a1.tar.gz",)),
    Case("prompt shows the values", ("-annex-name", "a1", "-count", "3", "-duration", "2",
                                     "-idle", "1.5", "-aws-on-demand-instance-type",
                                     "c5.large"), 0,
         r"^Will request 3 c5\.large on-demand instances for 2\.00 hours\. Each instance will "
         r"terminate after being idle for 1\.50 hours\.", stdin="YES\n", live=(("a1", 3),),
         lease=(("a1", 7200),), bundles=("config-a1.tar.gz",)),
    Case("prompt declined", ("-annex-name", "a1", "-count", "1"), 1,
         r"Is that OK\? \(Type 'yes' or 'no'\): Not starting an annex; user did not confirm\.\n"
         r"\nTo change the instance type, use the -aws-on-demand-instance-type flag\.\n"
         r"To change the lease duration, use the -duration flag\.\n"
         r"To change how long an idle instance will wait before terminating itself, use the "
         r"-idle flag\.\n$", stdin="no\n"),
    Case("prompt at end of input", ("-annex-name", "a1", "-count", "1"), 1,
         r"Not starting an annex", stdin=""),
    Case("same name adds instances", START, 0, STARTED, before=(START,),
         live=(("a1", 4),), lease=(("a1", 3000),), bundles=("config-a1.tar.gz",)),
    Case("update lease", ("-annex-name", "a1", "-duration", "3"), 0, r"^Lease updated\.\n$",
         before=(START,), live=(("a1", 2),), lease=(("a1", 10800),),
         bundles=("config-a1.tar.gz",)),
    Case("update lease of unknown annex", ("-annex-name", "nope", "-duration", "1"), 2, "^$",
         r"^condor_annex: -annex-name: annex 'nope' does not exist \(no instance, fleet, "
         r"lease or bundle\); see 'condor_annex status'\n$"),
    Case("update refuses -idle", ("-annex-name", "a1", "-duration", "1", "-idle", "1"), 2,
         "^$", r"^condor_annex: -idle: cannot be changed", before=(START,),
         live=(("a1", 2),), lease=(("a1", 3000),), bundles=("config-a1.tar.gz",)),
    Case("off", ("-annex-name", "a1", "off"), 0,
         r"^Annex a1: terminated 2 instance\(s\); lease deleted; bundle deleted\.\n$",
         before=(START,), lease=(("a1", None),)),
    Case("off of unknown annex", ("-annex-name", "nope", "off"), 2, "^$",
         r"^condor_annex: -annex-name: annex 'nope' does not exist \(no instance, fleet, "
         r"lease or bundle\); see 'condor_annex status'\n$"),
    Case("off of unknown annex names the closest", ("-annex-name", "a2", "off"), 2, "^$",
         r"^condor_annex: -annex-name: annex 'a2' does not exist .*did you mean a1\? see "
         r"'condor_annex status'\n$", before=(START,), live=(("a1", 2),),
         lease=(("a1", 3000),), bundles=("config-a1.tar.gz",)),
    # The original's tables (reference §6; compared with the original in tests/original); no
    # collector here, which the original said on stderr.
    Case("status", ("-status",), 0,
         r"^NAME                        TOTAL running\na1                              2       2\n"
         r"\nNAME                        STATUS  INSTANCES\.\.\.\n"
         r"a1                          running i-[0-9a-f]+ i-[0-9a-f]+\n$",
         r"^Status check failed -- cannot contact collector\n$", before=(START,),
         live=(("a1", 2),), lease=(("a1", 3000),), bundles=("config-a1.tar.gz",)),
    Case("status of one", ("-status", "-annex-name", "a1"), 0,
         r"^STATE          COUNT\nrunning            2\nTOTAL              2\n\n"
         r"Instances not in the pool, grouped by state:\nrunning i-[0-9a-f]+ i-[0-9a-f]+\n$",
         r"^Status check failed -- cannot contact collector\n$", before=(START,),
         live=(("a1", 2),), lease=(("a1", 3000),), bundles=("config-a1.tar.gz",)),
    Case("status of an unknown annex", ("-status", "-annex-name", "a2"), 0,
         r"^Found no machines in that annex\.\n$", before=(START,), live=(("a1", 2),),
         lease=(("a1", 3000),), bundles=("config-a1.tar.gz",)),
    # The word runs HTCondor's condor_status, as the original did; none on this host's PATH.
    Case("status word without condor_status", ("-annex-name", "a1", "status"), 1, r"^$",
         r"^condor_annex: status: HTCondor's condor_status is not on PATH .*'condor_annex "
         r"-status'\n$", before=(START,), live=(("a1", 2),), lease=(("a1", 3000),),
         bundles=("config-a1.tar.gz",)),
    Case("status of nothing", ("-status",), 0, r"^Found no instances in any annex\.\n$"),
    Case("classads of nothing", ("-status", "-classads"), 0,
         r"^Found no instances in any annex\.\n$"),
    Case("classads", ("-status", "-classads"), 0,
         r'^AnnexID = "a1"\nMyType = "Annex"\nName = "a1 \[[0-9a-f]{32}\]"\n'
         r'NumInstancesRunning = 2\nRunningInstancesList = \{ "i-[0-9a-f]+","i-[0-9a-f]+" \}\n'
         r'TotalInstances = 2\n\n$', r"^Status check failed -- cannot contact collector\n$",
         before=(START,),
         live=(("a1", 2),), lease=(("a1", 3000),), bundles=("config-a1.tar.gz",)),
    Case("help", ("-help",), 1, r"^Usage: condor_annex"),
    # Bad input: one line, exit 2, nothing created.
    Case("non-numeric count", ("-annex-name", "a1", "-count", "two", "-yes"), 2, "^$",
         r"^condor_annex: -count: 'two' is not a whole number; use e\.g\. -count 10\n$"),
    Case("negative count", ("-annex-name", "a1", "-count", "-2", "-yes"), 2, "^$",
         r"^condor_annex: -count: -2 is out of range"),
    Case("negative duration", ("-annex-name", "a1", "-count", "1", "-duration", "-2", "-yes"),
         2, "^$", r"^condor_annex: -duration: '-2' is not a number of hours"),
    Case("unknown flag", ("-annex-name", "a1", "-count", "1", "-yes", "-fast"), 2, "^$",
         r"^condor_annex: -fast: unknown option; see 'condor_annex -help'\n$"),
    Case("missing value", ("-annex-name", "a1", "-yes", "-count"), 2, "^$",
         r"^condor_annex: -count: needs 1 value\(s\); e\.g\. -count VALUE\n$"),
    Case("ambiguous prefix", ("-annex-name", "a1", "-count", "1", "-s"), 2, "^$",
         r"^condor_annex: -s: ambiguous"),
    Case("spot without a config", ("-annex-name", "a1", "-slots", "4", "-yes"), 2, "^$",
         r"^condor_annex: -aws-spot-fleet-config-file: a spot fleet needs its Spot Fleet "
         r"request config"),
    Case("region not set up", ("-annex-name", "a1", "-count", "1", "-yes", "-aws-region",
                             "us-west-2"), 2, "^$",
         r"^condor_annex: setup: .* is not set for region us-west-2; run 'condor_annex setup'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_classic_invocation(case: Case, cloud: Cloud, capsys, monkeypatch):
    for argv in case.before:
        assert main(list(argv)) == 0, argv
    capsys.readouterr()
    monkeypatch.setattr("sys.stdin", io.StringIO(case.stdin))

    started = time.time()
    code = main(list(case.argv))
    out, err = capsys.readouterr()

    assert code == case.code, (out, err)
    assert re.search(case.out, out), out
    assert re.search(case.err, err), err
    expected_live = dict(case.live)
    for annex in {i["TagMap"][TAG_ANNEX_NAME] for i in cloud.instances().values()} | set(
            expected_live):
        assert len(cloud.instances(annex)) == expected_live.get(annex, 0), annex
    leases = {a: s for a, s in case.lease if s is not None}
    assert sorted(cloud.schedules()) == sorted(f"annex-lease-{a}" for a in leases)
    for annex, seconds in leases.items():
        expires = cloud.schedule_input(annex)["LeaseExpiration"]
        assert abs(expires - (started + seconds)) < 60, (annex, expires - started)
    assert sorted(cloud.bundles()) == sorted(case.bundles)
    assert os.listdir(cloud.cwd) == []


def test_no_ami_is_bad_input_before_the_prompt(cloud: Cloud, capsys):
    config.write_block("zz-no-ami", {"ANNEX_DEFAULT_ODI_IMAGE_ID": ""})
    code, out, err = run(["-annex-name", "a1", "-count", "1"], capsys)
    assert code == 2 and out == ""
    assert err.startswith("condor_annex: -aws-on-demand-ami-id: no AMI is configured")
    assert cloud.empty()


def test_create_tags_owner_and_idle(cloud: Cloud, capsys):
    code, out, err = run(["-annex-name", "t1", "-count", "1", "-yes", "-tag", "project", "p9",
                          "-tag", "team", "blue", "-owner", "alice, bob", "-idle", "0.5"],
                         capsys)
    assert code == 0, err
    (inst,) = cloud.instances("t1").values()
    assert inst["TagMap"] == {TAG_ANNEX_NAME: "t1", "project": "p9", "team": "blue",
                              TAG_LAUNCH_TOKEN: inst["ClientToken"],
                              "htcondor:ConfigBucket": cloud.outputs.bucket,
                              TAG_LEASE_END: str(cloud.schedule_input("t1")["LeaseExpiration"]),
                              TAG_ANNEX_OWNER: cloud.schedule_input("t1")["AnnexOwner"]}
    assert inst["InstanceType"] == "m4.large" and inst["ImageId"] == MOTO_AMI
    cfg = cloud.bundle_config("t1")
    assert 'START = stringListMember(TARGET.Owner, "alice,bob")' in cfg
    assert "STARTD_NOCLAIM_SHUTDOWN = 1800" in cfg
    token = inst["ClientToken"]
    assert f"'{token}'" in out and token.startswith("t1_")


def test_classads_mark_terminated_instances(cloud: Cloud, capsys):
    assert main(["-annex-name", "c1", "-count", "2", "-yes"]) == 0
    victim = sorted(cloud.instances("c1"))[0]
    make_client(cloud.aws, "ec2").terminate_instances(InstanceIds=[victim])
    capsys.readouterr()
    code, out, _ = run(["-status", "-annex-name", "c1", "-classads"], capsys)
    assert code == 0
    assert "TotalInstances = 2\n" in out
    assert f'TerminatedInstancesList = {{ "{victim}" }}' in out or \
        f'ShuttingDownInstancesList = {{ "{victim}" }}' in out
    assert "NumInstancesRunning = 1\n" in out


def test_classads_parse_as_condor_advertise_input(cloud: Cloud, capsys):
    # -classads is meant for condor_advertise: HTCondor's own parser must read every ad.
    import classad2
    for name, count in (("ca1", 2), ("ca2", 1)):
        assert main(["-annex-name", name, "-count", str(count), "-yes"]) == 0
    capsys.readouterr()
    code, out, _ = run(["-status", "-classads"], capsys)
    assert code == 0
    ads = list(classad2.parseAds(out))
    by_name = {ad["AnnexID"]: ad for ad in ads}    # the original's attribute (reference §6)
    assert all(ad["Name"].startswith(ad["AnnexID"] + " [") for ad in ads)
    assert [len(ad["RunningInstancesList"]) for ad in ads] == [2, 1]
    assert set(by_name) == {"ca1", "ca2"}
    assert (by_name["ca1"]["TotalInstances"], by_name["ca2"]["TotalInstances"]) == (2, 1)
    assert all(ad["MyType"] == "Annex" for ad in ads), ads


def test_endpoint_and_key_file_flags(cloud: Cloud, capsys, tmp_path):
    # Break the configured endpoint and keys; the flags alone must reach the cloud.
    config.write_block("zz-override", {"ANNEX_AWS_ENDPOINT_URL": "http://127.0.0.1:9",
                                       "ANNEX_DEFAULT_ACCESS_KEY_FILE": "/nonexistent",
                                       "ANNEX_DEFAULT_SECRET_KEY_FILE": "/nonexistent"})
    url = cloud.aws.endpoint_url
    code, out, err = run(["-annex-name", "e1", "-count", "1", "-yes",
                          "-aws-ec2-url", url, "-aws-s3-url", url, "-aws-events-url", url,
                          "-aws-lambda-url", url,
                          "-aws-access-key-file", cloud.aws.access_key_file,
                          "-aws-private-key-file", cloud.aws.secret_key_file], capsys)
    assert code == 0, err
    assert len(cloud.instances("e1")) == 1


@pytest.mark.parametrize("problem", ["world-readable", "missing"])
def test_bad_secret_key_file_is_bad_input(problem, cloud: Cloud, capsys, tmp_path):
    secret = tmp_path / "secret-key"
    if problem == "world-readable":
        secret.write_text("testing\n")
        secret.chmod(0o644)
    code, out, err = run(["-annex-name", "k1", "-count", "1", "-yes",
                          "-aws-secret-key-file", str(secret)], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("condor_annex: -aws-secret-key-file: ")
    if problem == "world-readable":
        assert f"chmod 600 {secret}" in err
    assert cloud.empty()


def test_on_demand_overrides_reach_run_instances(cloud: Cloud, capsys):
    ec2 = make_client(cloud.aws, "ec2")
    sg = ec2.create_security_group(GroupName="other", Description="x")["GroupId"]
    ec2.create_key_pair(KeyName="other-key")
    code, _, err = run(["-annex-name", "o1", "-count", "1", "-yes",
                        "-aws-on-demand-instance-type", "c5.xlarge",
                        "-aws-on-demand-ami-id", MOTO_AMI,
                        "-aws-on-demand-security-group-ids", sg,
                        "-aws-on-demand-key-name", "other-key"], capsys)
    assert code == 0, err
    (inst,) = cloud.instances("o1").values()
    assert inst["InstanceType"] == "c5.xlarge" and inst["KeyName"] == "other-key"
    assert [g["GroupId"] for g in inst["SecurityGroups"]] == [sg]


# --- setup and check-setup -------------------------------------------------------------------

def test_setup_reports_progress(cloud: Cloud, capsys):
    code, out, err = run(["-setup"], capsys)
    assert code == 0, err
    assert re.match(r"^Setting up condor_annex\.\.\.\.* complete\.\nSetup successful in "
                    r"us-east-1: bucket ", out), out


def test_check_setup_lists_each_resource(cloud: Cloud, capsys):
    code, out, _ = run(["-check-setup"], capsys)
    lines = out.splitlines()
    assert lines[0] == "Checking condor_annex..."
    rows = dict(re.fullmatch(r"Checking for (.+?)\.\.\. (OK|FAILED)( \(.*\))?", line).group(1, 2)
                for line in lines[1:-1])
    assert len(rows) == 15   # with the agent row
    # moto gap (see tests/aws/test_setup.py): its CloudFormation skips the sweep schedule, the
    # alarm and the event invoke config, so those rows fail on moto and the exit status is 1.
    gaps = ("lease retries", "lease failure alarm", "lease sweep schedule")
    assert {r: ok for r, ok in rows.items() if not r.startswith(gaps)} == \
        {r: "OK" for r in rows if not r.startswith(gaps)}
    assert (code, lines[-1]) == ((0, "Your setup looks OK.") if "FAILED" not in rows.values()
                                 else (1, "Your setup is incomplete; run 'condor_annex -setup' "
                                       "again."))


def test_check_setup_notices_a_missing_key_pair(cloud: Cloud, capsys):
    make_client(cloud.aws, "ec2").delete_key_pair(KeyName=cloud.outputs.key_name)
    code, out, _ = run(["-check-setup"], capsys)
    assert code == 1
    assert f"Checking for key pair {cloud.outputs.key_name}... FAILED" in out


def test_setup_with_key_files_records_them(cloud: Cloud, capsys, user_config):
    code, _, err = run(["-setup", cloud.aws.access_key_file, cloud.aws.secret_key_file], capsys)
    assert code == 0, err
    knobs = config.read_knobs()
    assert knobs["us_east_1.ANNEX_DEFAULT_SECRET_KEY_FILE"] == cloud.aws.secret_key_file
    assert knobs["us_east_1.ANNEX_DEFAULT_ACCESS_KEY_FILE"] == cloud.aws.access_key_file


def test_setup_refuses_unreadable_key_files(cloud: Cloud, capsys, tmp_path):
    code, out, err = run(["-setup", str(tmp_path / "no-a"), str(tmp_path / "no-s")], capsys)
    assert code == 2 and "Setting up" not in out
    assert err.startswith("condor_annex: -aws-access-key-file: cannot read ")


# --- regressions of the original's defects (reference §10) -----------------------------------

@pytest.mark.parametrize("name", ["a" * 28, "my_annex", "ends_", "x" * 27 + "_"])
def test_regression_bad_annex_names_are_refused_and_nothing_is_created(name, cloud: Cloud,
                                                                       capsys):
    # The original uploaded under the full name but tagged and leased the 27-character cut,
    # and split client tokens at the first '_'.
    code, out, err = run(["-annex-name", name, "-count", "1", "-yes"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("condor_annex: -annex-name: ")
    assert cloud.empty()
    assert os.listdir(cloud.cwd) == []


def test_regression_27_character_name_is_used_whole(cloud: Cloud, capsys):
    name = "n" * 27
    assert main(["-annex-name", name, "-count", "1", "-yes"]) == 0
    (inst,) = cloud.instances(name).values()
    assert inst["ClientToken"].rpartition("_")[0] == name
    assert cloud.schedules() == [f"annex-lease-{name}"]
    assert cloud.bundles() == [f"config-{name}.tar.gz"]


def test_regression_no_owner_does_not_swallow_the_next_argument(cloud: Cloud, capsys):
    # The original skipped the argument after -no-owner: "-count" would be lost and "2" would
    # be a stray word.
    code, out, err = run(["-annex-name", "no1", "-no-owner", "-count", "2", "-yes"], capsys)
    assert code == 0, err
    assert len(cloud.instances("no1")) == 2
    assert "START = TRUE" in cloud.bundle_config("no1")


def test_regression_off_of_a_prefix_leaves_the_longer_name_untouched(cloud: Cloud, capsys):
    # The original's lease function matched client tokens by prefix: ending "foo" killed
    # "foobar".
    assert main(["-annex-name", "foobar", "-count", "2", "-yes"]) == 0
    assert main(["-annex-name", "foo", "-count", "1", "-yes"]) == 0
    foobar = set(cloud.instances("foobar"))
    capsys.readouterr()

    code, out, _ = run(["-status", "-annex-name", "foo"], capsys)
    assert code == 0 and "TOTAL              1\n" in out and "foobar" not in out
    code, out, _ = run(["-status", "-annex-name", "foo", "-classads"], capsys)
    assert code == 0 and 'AnnexID = "foo"' in out and "foobar" not in out
    assert "TotalInstances = 1\n" in out

    code, out, err = run(["-annex-name", "foo", "off"], capsys)
    assert code == 0, err
    assert out.startswith("Annex foo: terminated 1 instance(s)")
    assert set(cloud.instances("foobar")) == foobar
    assert cloud.instances("foo") == {}
    assert cloud.schedules() == ["annex-lease-foobar"]
    assert cloud.bundles() == ["config-foobar.tar.gz"]


def test_regression_off_removes_instances_lease_and_bundle(cloud: Cloud, capsys):
    # The original's off only told the masters to shut down: instances not yet in the pool,
    # the rule and the tarball all stayed.
    assert main(["-annex-name", "gone", "-count", "3", "-yes"]) == 0
    assert main(["-annex-name", "gone", "off"]) == 0
    assert cloud.instances("gone") == {}
    states = {i["State"]["Name"] for i in cloud.instances("gone", live=False).values()}
    assert states <= {"shutting-down", "terminated"} and states
    assert cloud.schedules() == [] and cloud.bundles() == []


def test_regression_setup_twice_writes_one_block(cloud: Cloud, capsys, user_config):
    # The original appended a new block to user_config on every setup.
    for _ in range(3):
        assert main(["-setup", cloud.aws.access_key_file, cloud.aws.secret_key_file]) == 0
    text = user_config.read_text()
    assert text.count("# BEGIN condor-annex setup") == 1
    assert text.count("# BEGIN condor-annex keys") == 1
    assert len(re.findall(r"^us_east_1\.ANNEX_DEFAULT_S3_BUCKET =", text, re.M)) == 1


@pytest.mark.parametrize("flags, data", [
    (("-aws-user-data", "#cloud-config\n"), b"#cloud-config\n"),
    (("-aws-user-data-file", "{file}"), b"#!/bin/sh\necho from-file\n"),
    (("-aws-default-user-data", "default"), b"default"),
    (("-aws-default-user-data-file", "{file}"), b"#!/bin/sh\necho from-file\n"),
], ids=["value", "file", "default", "default-file"])
def test_regression_on_demand_user_data_is_sent(flags, data, cloud: Cloud, capsys, tmp_path):
    # The original always sent empty user data to on-demand instances.
    f = tmp_path / "user-data"
    f.write_bytes(b"#!/bin/sh\necho from-file\n")
    argv = ["-annex-name", "ud", "-count", "1", "-yes"] + [a.format(file=f) for a in flags]
    assert main(argv) == 0, capsys.readouterr().err
    (iid,) = cloud.instances("ud")
    attr = make_client(cloud.aws, "ec2").describe_instance_attribute(InstanceId=iid,
                                                                      Attribute="userData")
    # The bootstrap first, then the user's own data as the second MIME part, unchanged.
    import email
    msg = email.message_from_bytes(base64.b64decode(attr["UserData"]["Value"]))
    parts = [p.get_payload(decode=True) for p in msg.walk() if not p.is_multipart()]
    assert parts[0].startswith(b"#cloud-config\n# condor-annex") and parts[1:] == [data]


def test_regression_failed_create_leaves_nothing(cloud: Cloud, capsys):
    # The original left the password tarball in cwd (and in S3) when a step failed.  Here the
    # launch fails (moto rejects a security group that does not exist) after the bundle and the
    # lease were made; both must be gone, and the cwd untouched.
    code, out, err = run(["-annex-name", "fail1", "-count", "2", "-yes",
                          "-aws-on-demand-security-group-ids", MISSING_SG], capsys)
    assert code == 1
    assert out == "Starting annex...\n"
    assert err.count("\n") == 1 and err.startswith("condor_annex: ") and "RunInstances" in err
    assert cloud.empty()
    assert os.listdir(cloud.cwd) == []


def test_regression_declined_prompt_creates_nothing(cloud: Cloud, capsys, monkeypatch):
    code, out, _ = run(["-annex-name", "maybe", "-count", "5"], capsys, stdin="nope\n",
                       monkeypatch=monkeypatch)
    assert code == 1 and "Not starting an annex; user did not confirm." in out
    assert cloud.empty()
    assert os.listdir(cloud.cwd) == []


def test_regression_lease_update_of_unknown_annex_creates_nothing(cloud: Cloud, capsys):
    # The original's update made a rule for any name, existing or not.
    code, _, err = run(["-annex-name", "ghost", "-duration", "2"], capsys)
    assert code == 2 and "-annex-name: annex 'ghost' does not exist" in err
    assert cloud.empty()


def test_regression_lease_update_keeps_the_target(cloud: Cloud, capsys):
    # The original swapped in the on-demand lease function when updating without
    # -aws-spot-fleet; ours moves only the time.
    assert main(["-annex-name", "u1", "-count", "1", "-yes"]) == 0
    sch = make_client(cloud.aws, "scheduler")
    before = sch.get_schedule(Name="annex-lease-u1")["Target"]
    assert main(["-annex-name", "u1", "-duration", "4", "-aws-spot-fleet"]) == 0
    after = sch.get_schedule(Name="annex-lease-u1")["Target"]
    assert (after["Arn"], after["RoleArn"]) == (before["Arn"], before["RoleArn"])
    end = json.loads(after["Input"])["LeaseExpiration"]
    assert end > json.loads(before["Input"])["LeaseExpiration"] + 3000
    # The update is extend: the instance's lease tag and the bundle move too.
    (inst,) = cloud.instances("u1").values()
    assert inst["TagMap"][TAG_LEASE_END] == str(end)
    assert f"AnnexLeaseEnd = {end}\n" in cloud.bundle_config("u1")
