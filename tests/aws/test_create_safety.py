"""A create touches only what it made, and nothing is ever left that nothing will end (issue 8).

Every test runs the real command line against the moto server through the AWS gateway
(:mod:`condor_annex.providers.local.gateway`), which adds what moto forgives and AWS does:
throttling, server errors, lost replies, held requests, EC2's listing lag and client-token
idempotency.  What the commands left is read back from moto directly (not through the gateway,
whose listing lag would hide it).

The invariant checked after every fault: no live instance, bundle or annex role without a
lease.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from condor_annex import config
from condor_annex.cli.main import main
from condor_annex.model import TAG_ANNEX_NAME, TAG_LAUNCH_TOKEN
from condor_annex.providers.aws.session import make_client

#: A well-formed security group id that does not exist: RunInstances rejects it.
MISSING_SG = "sg-0123456789abcdef0"


class Cloud:
    """What is in the emulator, read from moto itself (past the gateway's listing lag)."""

    def __init__(self, aws, outputs, gateway) -> None:
        self.aws, self.outputs, self.gateway = aws, outputs, gateway

    def instances(self, annex: str | None = None) -> dict[str, dict]:
        """Live (pending/running) instances carrying our annex tag: id -> tag map."""
        ec2 = make_client(self.aws, "ec2")
        found = {}
        for page in ec2.get_paginator("describe_instances").paginate(Filters=[
                {"Name": "tag-key", "Values": [TAG_ANNEX_NAME]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]}]):
            for r in page["Reservations"]:
                for i in r["Instances"]:
                    tags = {t["Key"]: t["Value"] for t in i.get("Tags", [])}
                    if annex is None or tags.get(TAG_ANNEX_NAME) == annex:
                        found[i["InstanceId"]] = tags
        return found

    def leases(self) -> dict[str, int]:
        """annex -> lease end (epoch seconds) of every lease schedule."""
        sch = make_client(self.aws, "scheduler")
        out = {}
        for s in sch.list_schedules(NamePrefix="annex-lease-")["Schedules"]:
            full = sch.get_schedule(Name=s["Name"])
            event = json.loads(full["Target"]["Input"])
            out[event["AnnexName"]] = int(event["LeaseExpiration"])
        return out

    def bundles(self) -> dict[str, str]:
        """annex -> ETag of every bundle in the bucket."""
        s3 = make_client(self.aws, "s3")
        return {o["Key"][len("config-"):-len(".tar.gz")]: o["ETag"]
                for o in s3.list_objects_v2(Bucket=self.outputs.bucket).get("Contents", [])
                if o["Key"].startswith("config-")}   # not setup's agent/

    def roles(self) -> list[str]:
        """Annexes with their own IAM role (``condor-annex-<annex>``, path
        ``/condor-annex/annex/``)."""
        iam = make_client(self.aws, "iam")
        return [r["RoleName"][len("condor-annex-"):] for r in iam.list_roles(
            PathPrefix="/condor-annex/annex/")["Roles"] if r["Path"] == "/condor-annex/annex/"]

    def orphans(self) -> list[str]:
        """What nothing would end: live instances, bundles or roles of an annex with no
        lease."""
        leases = self.leases()
        return sorted({f"instance {iid} of {tags[TAG_ANNEX_NAME]}"
                       for iid, tags in self.instances().items()
                       if tags[TAG_ANNEX_NAME] not in leases} |
                      {f"bundle of {a}" for a in self.bundles() if a not in leases} |
                      {f"role of {a}" for a in self.roles() if a not in leases})


@pytest.fixture
def cloud(account, outputs, gateway, tmp_path, monkeypatch) -> Cloud:
    """A set-up account whose endpoint is the gateway in front of moto; no listing-lag wait in
    rollbacks unless a test asks for one."""
    config.write_block("setup", config.setup_knobs(outputs))
    config.write_block("gateway", {"ANNEX_AWS_ENDPOINT_URL": gateway.url,
                                   "ANNEX_LISTING_LAG": "0"})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    # Each new annex's own instance profile is refused by launches while IAM propagates it
    # (the strict rule); kept short here, where every test creates new annexes.
    gateway.profile_age_s = 0.5
    return Cloud(account, outputs, gateway)


def run(argv, capsys) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cli(*argv: str, user_config: Path | None = None) -> subprocess.Popen:
    """The command line in a process of its own (so it can be killed)."""
    env = dict(os.environ)
    if user_config is not None:
        env["CONDOR_ANNEX_USER_CONFIG"] = str(user_config)
    return subprocess.Popen([sys.executable, "-m", "condor_annex.cli.main", *argv], env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


# --- adding to an existing annex ------------------------------------------------------------

ADD_FAILURES = {
    "capacity": lambda gw: gw.fail("ec2.RunInstances", "InsufficientInstanceCapacity",
                                   "We currently do not have sufficient m4.large capacity.",
                                   status=500, times=1),
    "throttled-out": lambda gw: gw.throttle("ec2.RunInstances"),
}


@pytest.mark.parametrize("syntax", ["classic", "modern"])
@pytest.mark.parametrize("failure", sorted(ADD_FAILURES))
def test_a_failed_add_leaves_the_annex_running_with_its_lease_and_bundle(
        cloud, capsys, monkeypatch, syntax, failure):
    assert run(["create", "keep", "--count", "2", "--duration", "3h"], capsys)[0] == 0
    before = cloud.instances("keep"), cloud.leases()["keep"], cloud.bundles()["keep"]
    monkeypatch.setattr("condor_annex.providers.aws.launch_retry.TOTAL_S", 2.0)
    ADD_FAILURES[failure](cloud.gateway)

    argv = ["-annex-name", "keep", "-count", "1", "-yes"] if syntax == "classic" else \
        ["create", "keep", "--count", "1"]
    code, _, err = run(argv, capsys)

    # Retries show a progress line each; the error itself is the last line.
    assert code == 1 and "RunInstances" in err.splitlines()[-1] and "Traceback" not in err, err
    assert cloud.instances("keep") == before[0]
    assert cloud.leases()["keep"] == before[1]
    assert "keep" in cloud.bundles()


def test_a_failed_add_with_a_mistyped_security_group_leaves_the_annex(cloud, capsys):
    assert run(["-annex-name", "sg", "-count", "2", "-yes"], capsys)[0] == 0
    before = cloud.instances("sg"), cloud.leases()["sg"]

    code, _, err = run(["-annex-name", "sg", "-count", "1", "-yes",
                        "-aws-on-demand-security-group-ids", MISSING_SG], capsys)

    assert code == 1 and "RunInstances" in err
    assert (cloud.instances("sg"), cloud.leases()["sg"]) == before
    assert "sg" in cloud.bundles()


def test_ctrl_c_before_the_launch_of_an_add_leaves_the_annex(cloud, capsys, monkeypatch):
    assert run(["create", "cc", "--count", "2"], capsys)[0] == 0
    before = cloud.instances("cc"), cloud.leases()["cc"]

    def interrupted(self, request, **_):
        raise KeyboardInterrupt
    monkeypatch.setattr("condor_annex.providers.aws.provider.AwsProvider.launch", interrupted)
    code, _, err = run(["create", "cc", "--count", "3"], capsys)

    assert code == 130 and "interrupted" in err
    assert (cloud.instances("cc"), cloud.leases()["cc"]) == before
    assert "cc" in cloud.bundles()


def test_a_failed_create_of_a_new_annex_leaves_nothing(cloud, capsys):
    cloud.gateway.fail("ec2.RunInstances", "InsufficientInstanceCapacity", "none", status=500)
    code, _, err = run(["create", "fresh", "--count", "2"], capsys)
    assert code == 1 and "InsufficientInstanceCapacity" in err
    assert cloud.instances() == {} and cloud.leases() == {} and cloud.bundles() == {}
    assert cloud.roles() == []


def test_adding_keeps_the_lease_unless_a_longer_one_is_given(cloud, capsys):
    assert run(["create", "long", "--count", "1", "--duration", "3h"], capsys)[0] == 0
    three_hours = cloud.leases()["long"]

    # No --duration: the default (50 min) would end it sooner; adding keeps the 3 h.
    assert run(["create", "long", "--count", "1"], capsys)[0] == 0
    assert run(["-annex-name", "long", "-count", "1", "-yes"], capsys)[0] == 0
    assert cloud.leases()["long"] == three_hours
    assert len(cloud.instances("long")) == 3

    # A longer explicit one moves it later (after the launch succeeded).
    assert run(["create", "long", "--count", "1", "--duration", "5h"], capsys)[0] == 0
    assert cloud.leases()["long"] >= three_hours + 2 * 3600 - 60
    assert len(cloud.instances("long")) == 4


@pytest.mark.parametrize("argv, flag", [
    (["create", "short", "--count", "1", "--duration", "1m"], "--duration"),
    (["-annex-name", "short", "-count", "1", "-duration", "0.02", "-yes"], "-duration"),
], ids=["modern", "classic"])
def test_adding_with_a_shorter_lease_is_refused_and_changes_nothing(cloud, capsys, argv, flag):
    # An add that moved the lease from 3 h to 1 min would end the annex's running jobs.
    assert run(["create", "short", "--count", "2", "--duration", "3h"], capsys)[0] == 0
    before = cloud.instances("short"), cloud.leases()["short"], cloud.bundles()["short"]

    code, _, err = run(argv, capsys)

    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"condor_annex: {flag}: annex 'short' ends ")
    fix = "extend short DURATION --force-lease" if flag == "--duration" else \
        "-annex-name short -duration HOURS"
    assert fix in err
    assert (cloud.instances("short"), cloud.leases()["short"],
            cloud.bundles()["short"]) == before


def test_extend_refuses_to_shorten_without_force_lease(cloud, capsys):
    assert run(["create", "ext", "--count", "1", "--duration", "3h"], capsys)[0] == 0
    three_hours = cloud.leases()["ext"]

    code, _, err = run(["extend", "ext", "1h"], capsys)
    assert code == 2 and "--force-lease" in err
    assert cloud.leases()["ext"] == three_hours

    assert run(["extend", "ext", "1h", "--force-lease"], capsys)[0] == 0
    assert abs(cloud.leases()["ext"] - (time.time() + 3600)) < 60


# --- unknown annexes ---------------------------------------------------------------------------

@pytest.mark.parametrize("argv, flag", [
    (["off", "nosuch"], "NAME"), (["extend", "nosuch", "1h"], "NAME"),
    (["status", "nosuch"], "NAME"), (["-annex-name", "nosuch", "off"], "-annex-name"),
    (["-annex-name", "nosuch", "-duration", "1"], "-annex-name"),
], ids=["off", "extend", "status", "classic-off", "classic-update"])
def test_an_unknown_annex_is_bad_input_with_the_closest_names(cloud, capsys, argv, flag):
    assert run(["create", "nosuck", "--count", "1"], capsys)[0] == 0
    code, out, err = run(argv, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"condor_annex: {flag}: annex 'nosuch' does not exist")
    assert "did you mean nosuck?" in err and "condor_annex status" in err


def test_classic_status_of_an_unknown_annex_keeps_the_original_answer(cloud, capsys):
    code, out, _ = run(["-status", "-annex-name", "nosuch", "-classads"], capsys)
    assert code == 0 and out == "Found no machines in that annex.\n"   # the original's words


# --- lost replies and the listing lag ----------------------------------------------------------

def test_a_lost_launch_reply_under_a_10s_listing_lag_launches_once(cloud, capsys):
    # The reply is lost and the listing does not show the instances yet: the resend with the
    # same client token gets the first launch's instances back (EC2 idempotency), never a
    # second set.
    cloud.gateway.listing_lag(10)
    cloud.gateway.drop_reply("ec2.RunInstances", times=1)

    code, out, err = run(["create", "lag", "--count", "3", "--json"], capsys)

    assert code == 0, err
    assert "retrying" in err
    assert len(cloud.instances("lag")) == 3
    assert len(json.loads(out)["instances"]) == 3
    assert cloud.orphans() == []


def test_a_lost_launch_reply_that_cannot_be_resent_leaves_no_instance_without_a_lease(
        cloud, capsys, monkeypatch):
    # The launch gives up after the lost reply; the instances exist but the listings hide them
    # for 10 s: the rollback keeps looking (ANNEX_LISTING_LAG) and ends them, then removes the
    # bundle and the lease.  Ending the lease at once would have left 2 instances unbounded.
    monkeypatch.setattr("condor_annex.providers.aws.launch_retry.TOTAL_S", 0.0)
    cloud.gateway.profile_age_s = 0   # the one attempt reaches EC2 (no IAM propagation delay)
    config.write_block("gateway", {"ANNEX_AWS_ENDPOINT_URL": cloud.gateway.url,
                                   "ANNEX_LISTING_LAG": "12"})
    cloud.gateway.listing_lag(10)
    cloud.gateway.drop_reply("ec2.RunInstances", times=1)

    code, _, err = run(["create", "lag2", "--count", "2"], capsys)

    assert code == 1 and "RunInstances" in err
    assert cloud.instances() == {}
    assert cloud.leases() == {} and cloud.bundles() == {}
    ec2 = make_client(cloud.aws, "ec2")
    states = [i["State"]["Name"] for r in ec2.describe_instances(Filters=[
        {"Name": f"tag:{TAG_ANNEX_NAME}", "Values": ["lag2"]}])["Reservations"]
        for i in r["Instances"]]
    assert len(states) == 2 and set(states) <= {"shutting-down", "terminated"}


def test_a_rollback_ends_only_its_own_request(cloud, capsys, monkeypatch):
    # Two adds to one annex: the second's launch is lost and given up; its rollback ends its
    # own instances (tag htcondor:LaunchToken), never the first add's.
    assert run(["create", "mine", "--count", "2"], capsys)[0] == 0
    first = cloud.instances("mine")
    monkeypatch.setattr("condor_annex.providers.aws.launch_retry.TOTAL_S", 0.0)
    cloud.gateway.drop_reply("ec2.RunInstances", times=1)

    assert run(["create", "mine", "--count", "3"], capsys)[0] == 1
    assert cloud.instances("mine") == first
    assert len({t[TAG_LAUNCH_TOKEN] for t in first.values()}) == 1
    assert "mine" in cloud.leases() and "mine" in cloud.bundles()


# --- off and create of one annex at once ------------------------------------------------------

def test_off_during_a_held_create_on_this_machine_waits_for_it(cloud, capsys):
    # off and create of one annex on one machine serialize on the annex's lock: off waits for
    # the create to finish, then ends everything it made.
    held = cloud.gateway.hold("ec2.RunInstances")
    results: dict[str, int] = {}
    create = threading.Thread(target=lambda: results.update(
        create=main(["create", "race", "--count", "2"])))
    create.start()
    held.wait_held(timeout=30)
    off = threading.Thread(target=lambda: results.update(
        off=main(["off", "race", "--grace", "0"])))
    off.start()
    off.join(timeout=1.5)
    assert off.is_alive(), "off did not wait for the create holding the annex"
    held.release()
    create.join(timeout=60)
    off.join(timeout=60)

    assert results == {"create": 0, "off": 0}
    assert cloud.instances() == {} and cloud.leases() == {} and cloud.bundles() == {}
    assert cloud.roles() == []


def test_off_from_another_machine_during_a_held_create_leaves_nothing_running(
        cloud, capsys, user_config, tmp_path):
    # Another machine shares no lock: its off removes the lease while this create is between
    # its lease and its launch.  The create finds its lease gone after launching and ends what
    # it launched.
    other = tmp_path / "other-machine" / "user_config"
    other.parent.mkdir()
    other.write_text(user_config.read_text())
    other.chmod(0o600)
    held = cloud.gateway.hold("ec2.RunInstances")
    results: dict[str, int] = {}
    create = threading.Thread(target=lambda: results.update(
        create=main(["create", "race2", "--count", "2"])))
    create.start()
    held.wait_held(timeout=30)
    off = cli("off", "race2", "--grace", "0", user_config=other)
    assert off.wait(timeout=60) == 0, off.stderr.read()
    held.release()
    create.join(timeout=60)

    assert results == {"create": 1}
    assert "its lease was removed" in capsys.readouterr().err
    assert cloud.instances() == {} and cloud.orphans() == []


# --- kill -9 at every step ---------------------------------------------------------------------

def _steps(cloud, *argv) -> list[str]:
    """The cloud requests one command makes, in order (run once, through the gateway)."""
    cloud.gateway.reset_counts()
    proc = cli(*argv)
    assert proc.wait(timeout=120) == 0, proc.stderr.read()
    return [op for op, _ in cloud.gateway.trace]


@pytest.mark.parametrize("verb", ["create", "off"])
def test_kill_9_after_each_cloud_request_never_leaves_a_bundle_or_instance_without_a_lease(
        cloud, capsys, verb):
    def command(name):
        return ("create", name, "--count", "2") if verb == "create" else \
            ("off", name, "--grace", "0")

    if verb == "off":
        assert run(["create", "probe", "--count", "2"], capsys)[0] == 0
    steps = _steps(cloud, *command("probe"))
    assert len(steps) >= 4, steps
    # After the last request the command is done: kill it after each one before that.
    for k in range(1, len(steps)):
        name = f"k{k}"
        if verb == "off":
            assert run(["create", name, "--count", "2"], capsys)[0] == 0
        held = cloud.gateway.hold("*", after=k)
        proc = cli(*command(name))
        held.wait_held(timeout=60)
        proc.kill()
        proc.wait(timeout=30)
        held.release()
        time.sleep(0.2)   # the request that was in flight reaches moto
        assert cloud.orphans() == [], f"kill -9 after {steps[:k]}"


# --- throttling -------------------------------------------------------------------------------

def test_ten_creates_under_throttling_and_server_errors_all_succeed_and_offs_leave_nothing(
        cloud, capsys, monkeypatch):
    # 30 % of every request throttled (RequestLimitExceeded, ThrottlingException, SlowDown as
    # each service says it) and 5 % answered 503, for creates and offs alike.  Every back-off
    # sleep (botocore's and ours) runs 10x faster: the test is about outcomes, not waiting.
    real_sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: real_sleep(s / 10))
    cloud.gateway.seed(8)
    cloud.gateway.throttle("*", p=0.30)
    cloud.gateway.server_error("*", p=0.05, status=503)

    for n in range(10):
        code, _, err = run(["create", f"t{n}", "--count", "2"], capsys)
        assert code == 0, err
    cloud.gateway.listing_lag(0)
    assert {a: len(cloud.instances(a)) for a in (f"t{n}" for n in range(10))} == \
        {f"t{n}": 2 for n in range(10)}, "a create ended with more (or fewer) than it asked"
    outcomes = cloud.gateway.outcomes()
    assert outcomes.count("throttle") >= 20 and outcomes.count("server_error") >= 3

    for n in range(10):
        code, _, err = run(["off", f"t{n}", "--grace", "0"], capsys)
        assert code == 0, err
    assert cloud.instances() == {} and cloud.leases() == {} and cloud.bundles() == {}
    assert cloud.roles() == []
