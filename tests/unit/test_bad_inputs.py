"""A table of bad inputs, in both syntaxes, run through the real CLI against the moto server.

Each case must give what a user is owed: exit status 2, exactly one line on stderr that names
the flag (or knob, or file and line) that was wrong, no traceback, and nothing changed in the
emulator: instances, Spot Fleet requests, EC2 fleets, launch templates, bundle objects, lease
schedules and EventBridge rules are compared before and after every case.

The account is set up once for the module (setup takes seconds on moto); each case starts from
the same user config, standard input and environment.
"""

from __future__ import annotations

import io
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from condor_annex import config
from condor_annex.cli.main import main
from condor_annex.providers.aws.session import make_client

#: An AMI moto knows (its bundled Amazon images), as in conftest.
MOTO_AMI = "ami-03cf127a"


def reset_moto(url: str) -> None:
    """Forget every resource in the moto server (``POST /moto-api/reset``)."""
    import urllib.request
    urllib.request.urlopen(urllib.request.Request(url + "/moto-api/reset", method="POST"),
                           timeout=10).read()


@dataclass(frozen=True)
class Case:
    """One bad invocation.

    Attributes:
        id: the test id.
        argv: the command line; ``{name}`` in an item is replaced by a prepared file's path
            (see :func:`_files`).
        names: what the one stderr line must contain (the flag as typed, a knob, ``file:line``).
        stdin: what standard input holds.
        config: lines appended to the user config for this case.
        env: environment variables for this case (``{name}`` replaced as in argv).
    """

    id: str
    argv: tuple[str, ...]
    names: str
    stdin: str = ""
    config: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=())


MODERN = ("create", "bad1", "--count", "1")
CLASSIC = ("-annex-name", "bad1", "-count", "1", "-yes")
SLOTS = ("-annex-name", "bad1", "-slots", "2", "-yes", "-aws-spot-fleet-config-file")
SFR_OK = {"IamFleetRole": "arn:aws:iam::123456789012:role/fleet",
          "LaunchSpecifications": [{"InstanceType": "m5.large"}]}


def _sfr(**top) -> str:
    return json.dumps({**SFR_OK, **top})


def _sfr_spec(**spec) -> str:
    return json.dumps({**SFR_OK, "LaunchSpecifications": [{"InstanceType": "m5.large",
                                                            **spec}]})


def _tags(n: int, flag: str) -> tuple[str, ...]:
    out: tuple[str, ...] = ()
    for i in range(n):
        out += (flag, f"k{i}", "v")
    return out


CASES: list[Case] = []


def case(id: str, argv, names: str, **kw) -> None:
    if any(c.id == id for c in CASES):   # values cut short in ids may collide
        id = f"{id} #{len(CASES)}"
    CASES.append(Case(id, tuple(argv), names, **kw))


# --- modern: counts ----------------------------------------------------------------------------
for v in ["1_0", "١٠", "٥", "５", "+5", " 5", "5 ", "5\n", "0", "-1", "10001",
          "99999999999999999999", "9" * 5000, "1e3", "0x10", "NaN", "inf", "", "1.0", "one"]:
    case(f"modern --count {v[:20]!r}", ["create", "bad1", "--count", v], "--count")
for v in ["1_0", "0", "x", "١", "-3", "10001"]:
    case(f"modern --capacity {v!r}", ["create", "bad1", "--spot", "--capacity", v],
         "--capacity")

# --- modern: the join deadline (a unit, at least a minute) --------------------------------------
for v in ["10", "30s", "0m", "x", "-5m", "1e9h"]:
    case(f"modern --join-deadline {v!r}", ["create", "bad1", "--count", "1", "--join-deadline",
                                           v], "--join-deadline")

for v in ["10", "0m", "x"]:
    case(f"modern --job-deadline {v!r}", ["create", "bad1", "--count", "1", "--job-deadline",
                                          v], "--job-deadline")

# --- modern: the budget (issue 12 item 5): USD, more than 0, at least an instance-minute -----
for v in ["-1", "0", "0.0", "NaN", "nan", "inf", "-inf", "x", "", "1e3", "$5", "5 ", " 5",
          "5\n", "١", "５", "1,5", "+5", "1_0", "2000000", "0x10", "5.", "1.2.3"]:
    case(f"modern --budget {v!r}", MODERN + ("--budget", v), "--budget")
# Less than one minute of an m5.large ($0.096 an hour: $0.0016 a minute).
case("modern --budget below one instance-minute", MODERN + ("--instance-type", "m5.large",
                                                            "--budget", "0.001"), "--budget")
case("modern --budget with a type nobody prices", MODERN + ("--instance-type", "zz9.large",
                                                            "--budget", "5"), "zz9.large")
case("modern --spot --budget with a type nobody prices",
     ["create", "bad1", "--spot", "--capacity", "2", "--instance-types", "m5.large,zz9.large",
      "--image-id", MOTO_AMI, "--budget", "5"], "zz9.large")
# Tag htcondor:Budget takes one of EC2's 50 tags: a budgeted annex keeps 44 for the user.
case("modern --budget with 45 tags", MODERN + ("--budget", "5") + _tags(45, "--tag"), "--tag")
for v in ["-1", "0", "NaN", "x"]:
    case(f"knob ANNEX_DEFAULT_BUDGET {v!r}", MODERN, "ANNEX_DEFAULT_BUDGET",
         config=(f"ANNEX_DEFAULT_BUDGET = {v}",))
for v in ["-2", "0", "inf", "x", "0.0001"]:
    case(f"knob ANNEX_BUDGET_PER_DAY {v!r}", MODERN, "ANNEX_BUDGET_PER_DAY",
         config=(f"ANNEX_BUDGET_PER_DAY = {v}",))
case("knob ANNEX_DEFAULT_BUDGET below one instance-minute (classic)", CLASSIC,
     "ANNEX_DEFAULT_BUDGET", config=("ANNEX_DEFAULT_BUDGET = 0.0001",))

# --- modern: durations (a unit is required) ---------------------------------------------------
for v in ["2", "90", "0.5", "2 h", "2h\n", " 2h", "-2h", "0h", "0", "nan", "NaNh", "inf",
          "infh", "8d", "1e3s", "", "２h", "2H", "1_0h", "h", "9" * 400 + "h", "2hours",
          "1.5.2h"]:
    case(f"modern --duration {v[:20]!r}", MODERN + ("--duration", v), "--duration")
for v in ["15", "0m", "x", "15m\n", "8d", "-1m", "١m"]:
    case(f"modern --idle {v!r}", MODERN + ("--idle", v), "--idle")
for v in ["x", "0", "5m\n", "8d"]:
    case(f"modern --wait-timeout {v!r}", MODERN + ("--wait", "--wait-timeout", v),
         "--wait-timeout")

# --- modern: tags ------------------------------------------------------------------------------
for k, v in [("aws:x", "v"), ("AWS:x", "v"), ("Aws:Name", "v"), ("htcondor:AnnexOff", "now"),
             ("HTCondor:AnnexName", "x"), ("htcondor:LaunchToken", "x"),
             ("htcondor:ConfigBucket", "b"), ("", "v"), ("k" * 129, "v"), ("k", "v" * 257),
             ("a/b", "v"), ("a b", "v"), ("k\n", "v"), ("k", "v\nSTART = TRUE"), ("_index", "v"),
             ("..", "v"), ("ключ", "v"), ("k", "\x00")]:
    case(f"modern --tag {k[:20]!r} {v[:12]!r}", MODERN + ("--tag", k, v), "--tag")
case("modern 46 tags", MODERN + _tags(46, "--tag"), "--tag")
case("modern 51 tags", MODERN + _tags(51, "--tag"), "--tag")
case("modern tag twice", MODERN + ("--tag", "k", "1", "--tag", "k", "2"), "--tag")

# --- modern: owners ----------------------------------------------------------------------------
for v in ['a"\nSTART = TRUE', 'alice"', "alice,bob", "alice bob", '"alice"', "'alice'", "",
          "al$(ice)", "a\\b", "a@b", "x" * 33, "alice\n", "é", "a#b", "-alice"]:
    case(f"modern --owner {v[:20]!r}", MODERN + ("--owner", v), "--owner")
case("modern --owner with --no-owner", MODERN + ("--owner", "alice", "--no-owner"),
     "--no-owner")

# --- modern: instance types, AMIs, names, spot --------------------------------------------------
for v in ["big", "m5.large\n", "M5.LARGE", "m5.large;rm", "", "m5..large", "m5.large ", "m5"]:
    case(f"modern --instance-type {v!r}", MODERN + ("--instance-type", v), "--instance-type")
for v in ["ubuntu", "ami-123", "ami-0123456789abcdef0\n", "AMI-12345678", "ami-1234567g",
          " ami-12345678"]:
    case(f"modern --image-id {v!r}", MODERN + ("--image-id", v), "--image-id")
for v in ["a_b", "a b", "a" * 28, "a\n", "ä", "", ".", "a/b"]:
    case(f"modern NAME {v!r}", ["create", v, "--count", "1"], "NAME")
for v in ["m5.large:1_0", "m5.large:nan", "m5.large:inf", "m5.large:-1", "m5.large\n",
          "m5.large:1e3", "big:2", "m5.large,m5.large"]:
    case(f"modern --instance-types {v!r}",
         ["create", "bad1", "--spot", "--capacity", "2", "--instance-types", v],
         "--instance-types")
case("modern --fleet-type bogus", ["create", "bad1", "--spot", "--capacity", "2",
                                   "--fleet-type", "bogus"], "--fleet-type")
case("modern unknown flag", MODERN + ("--bogus",), "--bogus")
case("modern --count without value", ["create", "bad1", "--count"], "--count")

# --- modern: extend, off, status ----------------------------------------------------------------
for v in ["2", "90", "2h\n", "0h", "8d", "x", "١h"]:
    case(f"extend DURATION {v!r}", ["extend", "bad1", v], "DURATION")
case("extend bad NAME", ["extend", "b_1", "2h"], "NAME")
for v in ["x", "5\n", "-1", "1_0", "8d"]:
    case(f"off --grace {v!r}", ["off", "bad1", "--grace", v], "--grace")
case("off bad NAME", ["off", "a_b"], "NAME")
case("status bad NAME", ["status", "a\nb"], "NAME")

# --- classic -----------------------------------------------------------------------------------
for v in ["1_0", "١٠", "+5", " 5", "5\n", "0", "10001", "", "nan", "1e3"]:
    case(f"classic -count {v!r}", ["-annex-name", "bad1", "-count", v, "-yes"], "-count")
for v in ["1_0", "0", "٣"]:
    case(f"classic -slots {v!r}", ["-annex-name", "bad1", "-slots", v, "-yes"], "-slots")
for v in ["2h", "nan", "inf", "1e3", "", "1\n", "١", "0", "169", "1_0", " 1"]:
    case(f"classic -duration {v!r}", CLASSIC + ("-duration", v), "-duration")
for v in ["x", "nan", "0", "15m"]:
    case(f"classic -idle {v!r}", CLASSIC + ("-idle", v), "-idle")
for k, v in [("aws:x", "v"), ("htcondor:AnnexOff", "now"), ("HTCONDOR:x", "v"), ("", "v"),
             ("k" * 129, "v"), ("k", "v" * 257), ("a b", "v"), ("k", "v\nx")]:
    case(f"classic -tag {k[:20]!r} {v[:12]!r}", CLASSIC + ("-tag", k, v), "-tag")
case("classic 46 tags", CLASSIC + _tags(46, "-tag"), "-tag")
case("classic 51 tags", CLASSIC + _tags(51, "-tag"), "-tag")
for v in ['a"\nSTART = TRUE', '"alice"', "al$x", "x" * 33, "é", "a\\b", "alice;bob"]:
    case(f"classic -owner {v[:20]!r}", CLASSIC + ("-owner", v), "-owner")
for v in ["big", "m5.large\n"]:
    case(f"classic instance type {v!r}", CLASSIC + ("-aws-on-demand-instance-type", v),
         "-aws-on-demand-instance-type")
for v in ["ubuntu", MOTO_AMI + "\n"]:
    case(f"classic AMI {v!r}", CLASSIC + ("-aws-on-demand-ami-id", v), "-aws-on-demand-ami-id")
for v in ["mars", "us-east-1\n", "US-EAST-1"]:
    case(f"classic -aws-region {v!r}", CLASSIC + ("-aws-region", v), "-aws-region")
case("classic -aws-user-data over 16 KB in base64", CLASSIC + ("-aws-user-data", "x" * 12289),
     "-aws-user-data")
for name in ["fifo", "dir", "/dev/zero", "/dev/null", "huge", "/proc/self/mem", "missing",
             "userdata_13k"]:
    case(f"classic -aws-user-data-file {name}", CLASSIC + ("-aws-user-data-file", f"{{{name}}}"),
         "-aws-user-data-file")
case("classic -aws-default-user-data-file fifo",
     CLASSIC + ("-aws-default-user-data-file", "{fifo}"), "-aws-default-user-data-file")
for v in ["ftp://x", "http://a b", "http://x\n", "127.0.0.1:5000"]:
    case(f"classic -aws-ec2-url {v!r}", CLASSIC + ("-aws-ec2-url", v), "-aws-ec2-url")
for name in ["fifo", "dir", "/dev/zero", "binary"]:
    case(f"classic -aws-access-key-file {name}",
         CLASSIC + ("-aws-access-key-file", f"{{{name}}}"), "-aws-access-key-file")
case("classic -aws-secret-key-file fifo", CLASSIC + ("-aws-secret-key-file", "{fifo}"),
     "-aws-secret-key-file")
case("classic key name with newline", CLASSIC + ("-aws-on-demand-key-name", "a\nb"),
     "-aws-on-demand-key-name")
case("classic security group", CLASSIC + ("-aws-on-demand-security-group-ids", "sg-xyz"),
     "-aws-on-demand-security-group-ids")
case("classic lease function ARN with newline",
     CLASSIC + ("-aws-on-demand-lease-function-arn", "arn:aws:lambda:x\n"),
     "-aws-on-demand-lease-function-arn")
case("classic bad name", ["-annex-name", "a_b", "-count", "1", "-yes"], "-annex-name")
case("classic update with bare newline", ["-annex-name", "bad1", "-duration", "1\n"],
     "-duration")

# --- classic: Spot Fleet config files -----------------------------------------------------------
for name in ["fifo", "dir", "/dev/zero", "binary", "huge", "utf16", "empty"]:
    case(f"spot fleet file {name}", SLOTS + (f"{{{name}}}",), "-aws-spot-fleet-config-file")
for label, text in [
        ("not JSON", "{"), ("a list", "[]"), ("deep nesting", "[" * 100000 + "]" * 100000),
        ("NaN", _sfr(TargetCapacity=float("nan")).replace("NaN", "NaN")),
        ("InstanceType number", _sfr_spec(InstanceType=5)),
        ("nested garbage", _sfr_spec(Placement={"x": {"y": [1, {"z": None}]}})),
        ("Placement wrong type", _sfr_spec(Placement={"AvailabilityZone": 5})),
        ("unknown key", _sfr(Bogus=1)),
        ("htcondor tag", _sfr_spec(TagSpecifications=[{"ResourceType": "instance", "Tags": [
            {"Key": "htcondor:AnnexOff", "Value": "now"}]}])),
        ("aws tag", _sfr(TagSpecifications=[{"ResourceType": "spot-fleet-request", "Tags": [
            {"Key": "aws:x", "Value": "1"}]}])),
        ("ValidUntil garbage", _sfr(ValidUntil="garbage")),
        ("WeightedCapacity bool", _sfr_spec(WeightedCapacity=True)),
        ("WeightedCapacity huge", _sfr_spec(WeightedCapacity=1e400)),
        ("GroupId list", _sfr_spec(SecurityGroups=[{"GroupId": ["a\nb"]}])),
        ("VolumeSize string", _sfr_spec(BlockDeviceMappings=[{"Ebs": {"VolumeSize": "x"}}])),
        ("UserData too big", _sfr_spec(UserData="A" * 16388)),
        ("ImageId bad", _sfr_spec(ImageId="ubuntu\n")),
        ("TargetCapacity string", _sfr(TargetCapacity="4")),
        ("LaunchSpecifications not a list", _sfr(LaunchSpecifications={"a": 1})),
        ("Type bogus", _sfr(Type="forever")),
]:
    case(f"spot fleet JSON: {label}", SLOTS + ("-",), "-aws-spot-fleet-config-file",
         stdin=text)
case("spot fleet JSON on stdin over the cap", SLOTS + ("-",), "-aws-spot-fleet-config-file",
     stdin=" " * (2 << 20))

# --- images, bootstrap and the instances' knobs (issue 10) --------------------------------------
case("image name unknown", MODERN + ("--image", "debian-99"), "--image: no image named")
case("image al2023 refused", MODERN + ("--image", "al2023"), "--image: al2023 is not supported")
case("image arch mismatch modern", MODERN + ("--image-id", MOTO_AMI, "--instance-type",
                                             "m6g.large"), "--image-id: AMI")
case("image arch mismatch classic", CLASSIC + ("-aws-on-demand-ami-id", MOTO_AMI,
                                               "-aws-on-demand-instance-type", "m6g.large"),
     "-aws-on-demand-ami-id: AMI")
case("image arch mismatch of the default AMI knob", MODERN + ("--instance-type", "m6g.large"),
     "ANNEX_DEFAULT_ODI_IMAGE_ID: AMI")
case("user data over 16 KB once combined", CLASSIC + ("-aws-user-data", "#!/bin/sh\n" + "x" * 11000),
     "-aws-user-data: user data is")
case("modern --user-data over 16 KB once combined", MODERN + ("--user-data", "{userdata_13k}"),
     "--user-data: user data is")
for name in ["fifo", "dir", "missing", "/dev/zero"]:
    case(f"modern --user-data {name}", MODERN + ("--user-data", f"{{{name}}}"), "--user-data")
case("ANNEX_HTCONDOR_REPO not a series", MODERN, "ANNEX_HTCONDOR_REPO",
     config=("ANNEX_HTCONDOR_REPO = 24",))
case("ANNEX_INSTANCE_AWS_ENDPOINT_URL not a URL", MODERN, "ANNEX_INSTANCE_AWS_ENDPOINT_URL",
     config=("ANNEX_INSTANCE_AWS_ENDPOINT_URL = ftp://10.0.0.1",))

# --- the user config -----------------------------------------------------------------------------
for label, line in [
        ("KEY: value endpoint", "ANNEX_AWS_ENDPOINT_URL: http://127.0.0.1:1"),
        ("words", "just some words"), ("if", "if true"), ("multi-line @=", "X @=end"),
        ("no name", "= 3"), ("KEY value", "ANNEX_COLLECTOR cm:9618"), ("section", "[annex]"),
        ("control character", "A = b\x0bc"), ("KEY := v", "ANNEX_COLLECTOR := cm")]:
    for syntax, argv in (("modern", MODERN), ("classic", CLASSIC)):
        case(f"user_config {label} ({syntax})", argv, "user_config:", config=(line,))
for label, line, names in [
        ("endpoint not a URL", "ANNEX_AWS_ENDPOINT_URL = not-a-url", "ANNEX_AWS_ENDPOINT_URL"),
        ("endpoint ftp", "ANNEX_AWS_ENDPOINT_URL = ftp://x", "ANNEX_AWS_ENDPOINT_URL"),
        ("region", "ANNEX_DEFAULT_AWS_REGION = mars", "ANNEX_DEFAULT_AWS_REGION"),
        ("token command missing", "ANNEX_TOKEN_COMMAND = /nonexistent/tool",
         "ANNEX_TOKEN_COMMAND"),
        ("token command not executable", "ANNEX_TOKEN_COMMAND = {noexec}",
         "ANNEX_TOKEN_COMMAND"),
        ("token command not a program", "ANNEX_TOKEN_COMMAND = {notprogram}",
         "ANNEX_TOKEN_COMMAND"),
        ("token command a directory", "ANNEX_TOKEN_COMMAND = {dir}", "ANNEX_TOKEN_COMMAND"),
        ("token command unparsable", 'ANNEX_TOKEN_COMMAND = tool "a', "ANNEX_TOKEN_COMMAND"),
        ("collector with a quote", 'ANNEX_COLLECTOR = cm"x:9618', "ANNEX_COLLECTOR"),
        ("collector with a macro", "ANNEX_COLLECTOR = cm.$(DOMAIN):9618", "ANNEX_COLLECTOR"),
        ("collector list", "ANNEX_COLLECTOR = cm1, cm2", "ANNEX_COLLECTOR"),
        ("trust domain with a space", "ANNEX_TRUST_DOMAIN = a b", "ANNEX_TRUST_DOMAIN"),
        ("trust domain with a comma", "ANNEX_TRUST_DOMAIN = a,b", "ANNEX_TRUST_DOMAIN")]:
    case(f"user_config {label}", MODERN, names, config=(line,))
case("spot fleet config knob is a FIFO", ["-annex-name", "bad1", "-slots", "2", "-yes"],
     "ANNEX_DEFAULT_SFR_CONFIG_FILE", config=("ANNEX_DEFAULT_SFR_CONFIG_FILE = {fifo}",
                                              "ANNEX_DEFAULT_SFR_IAM_FLEET_ROLE = arn:aws:iam::1:"
                                              "role/r"))
for name in ["fifo", "dir", "/dev/zero", "binary"]:
    case(f"user_config is {name}", MODERN, "{" + name + "}",
         env=(("CONDOR_ANNEX_USER_CONFIG", "{" + name + "}"),))


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def account(moto_endpoint, tmp_path_factory):
    """A set-up account on moto, its user config text, and the odd files the cases name."""
    from condor_annex.config import AwsSettings
    from condor_annex.providers.aws.setup import setup

    home = tmp_path_factory.mktemp("bad-inputs")
    mp = pytest.MonkeyPatch()
    cfg = home / "condor" / "user_config"
    mp.setenv("CONDOR_ANNEX_USER_CONFIG", str(cfg))
    cwd = home / "cwd"
    cwd.mkdir()
    mp.chdir(cwd)
    reset_moto(moto_endpoint)
    access, secret = home / "access", home / "secret"
    for f in (access, secret):
        f.write_text("testing\n")
        f.chmod(0o600)
    aws = AwsSettings(region="us-east-1", endpoint_url=moto_endpoint,
                      access_key_file=str(access), secret_key_file=str(secret))
    tool = home / "fake_condor_token_create"
    tool.write_text("#!/bin/sh\necho eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZXN0In0.c2ln\n")
    tool.chmod(0o755)
    config.write_block("test", {
        "ANNEX_AWS_ENDPOINT_URL": moto_endpoint, "ANNEX_DEFAULT_ACCESS_KEY_FILE": str(access),
        "ANNEX_DEFAULT_SECRET_KEY_FILE": str(secret), "ANNEX_COLLECTOR": "127.0.0.1:9618",
        "ANNEX_TRUST_DOMAIN": "pool.test", "ANNEX_DEFAULT_ODI_IMAGE_ID": MOTO_AMI,
        "ANNEX_TOKEN_COMMAND": str(tool)})
    outputs = setup(aws, key_dir=home / "keys", poll_s=0.1, deadline_s=60)
    config.write_block("setup", config.setup_knobs(outputs))
    files = _files(home / "files")
    try:
        yield {"aws": aws, "outputs": outputs, "config": cfg, "text": cfg.read_text(),
               "files": files, "last": None}
    finally:
        mp.undo()


def _files(d: Path) -> dict[str, str]:
    """The odd inputs cases name as ``{name}``: a FIFO, a directory, a binary file, a sparse
    2 MiB file, UTF-16 JSON, an empty file, user data whose base64 is over 16 KB, a script
    without execute bits, an executable that is no program, a missing path, and device and
    /proc paths (named by themselves; /proc/self/mem is a regular file whose read fails)."""
    d.mkdir()
    os.mkfifo(d / "fifo")
    (d / "dir").mkdir()
    (d / "binary").write_bytes(bytes(range(256)) * 8)
    with open(d / "huge", "wb") as f:
        f.truncate(2 << 20)
    (d / "utf16").write_bytes(json.dumps(SFR_OK).encode("utf-16"))
    (d / "empty").write_bytes(b"")
    (d / "userdata_13k").write_bytes(b"#!/bin/sh\n" + b"x" * 13000)
    (d / "noexec").write_text("#!/bin/sh\necho eyJ\n")
    (d / "noexec").chmod(0o644)       # root too is refused: no execute bit at all
    (d / "notprogram").write_bytes(b"\x00\x01 not a program\n")
    (d / "notprogram").chmod(0o755)
    names = {n: str(d / n) for n in ("fifo", "dir", "binary", "huge", "utf16", "empty",
                                      "userdata_13k", "noexec", "notprogram")}
    names["missing"] = str(d / "missing")
    for dev in ("/dev/zero", "/dev/null", "/proc/self/mem"):
        names[dev] = dev
    assert stat.S_ISFIFO(os.stat(names["fifo"]).st_mode)
    return names


def _fill(text: str, files: dict[str, str]) -> str:
    for name, path in files.items():
        text = text.replace("{" + name + "}", path)
    return text


def snapshot(aws, bucket: str) -> dict:
    """What the emulator holds: every resource a create or off could make or remove."""
    ec2 = make_client(aws, "ec2")
    instances = sorted((i["InstanceId"], i["State"]["Name"])
                       for r in ec2.describe_instances()["Reservations"] for i in r["Instances"])
    sfrs = sorted((c["SpotFleetRequestId"], c["SpotFleetRequestState"])
                  for c in ec2.describe_spot_fleet_requests()["SpotFleetRequestConfigs"])
    fleets = sorted((f["FleetId"], f["FleetState"]) for f in ec2.describe_fleets()["Fleets"])
    templates = sorted(t["LaunchTemplateId"]
                       for t in ec2.describe_launch_templates()["LaunchTemplates"])
    objects = sorted((o["Key"], o["ETag"]) for o in make_client(aws, "s3").list_objects_v2(
        Bucket=bucket).get("Contents", []))
    schedules = sorted(s["Name"] for s in
                       make_client(aws, "scheduler").list_schedules()["Schedules"])
    rules = sorted(r["Name"] for r in make_client(aws, "events").list_rules()["Rules"])
    return {"instances": instances, "spot_fleet_requests": sfrs, "fleets": fleets,
            "launch_templates": templates, "objects": objects, "schedules": schedules,
            "rules": rules}


def test_the_table_is_big_enough():
    assert len(CASES) >= 150, len(CASES)
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, account, capsys, monkeypatch):
    files, aws, bucket = account["files"], account["aws"], account["outputs"].bucket
    if account["last"] is None:
        account["last"] = snapshot(aws, bucket)
        assert not account["last"]["instances"] and not account["last"]["schedules"]
    account["config"].write_text(account["text"] + "".join(_fill(line, files) + "\n"
                                                           for line in case.config))
    for name, value in case.env:
        monkeypatch.setenv(name, _fill(value, files))
    monkeypatch.setattr("sys.stdin", io.StringIO(case.stdin))
    capsys.readouterr()

    code = main([_fill(a, files) for a in case.argv])
    out, err = capsys.readouterr()

    after = snapshot(aws, bucket)
    before, account["last"] = account["last"], after
    assert "Traceback" not in out + err
    assert code == 2, (code, out, err)
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("condor_annex: "), err
    assert _fill(case.names, files) in err, err
    assert after == before, "the emulator changed"
