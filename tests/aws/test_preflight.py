"""``check-setup --preflight`` and the local cloud's answers to what moto lacks for it
(Service Quotas, IAM policy simulation, a synchronous Invoke of the lease function's probe),
through the AWS gateway in front of moto."""

from __future__ import annotations

import io
import json
import socket

import pytest
from botocore.exceptions import ClientError

from condor_annex import config
from condor_annex.cli.main import main
from condor_annex.lease.handler import probe
from condor_annex.providers.aws import policy as shipped
from condor_annex.providers.aws.session import make_client
from condor_annex.providers.local.account import route_default_vpc_out
from condor_annex.providers.local.strict_quotas import ServiceQuotas
from condor_annex.service.preflight import caller_principal, collector_address


def run(argv, capsys) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _user_with_policy(aws, tmp_path, document: dict, name: str = "annexer") -> None:
    """An IAM user with ``document`` attached as a managed policy; the CLI's key files become
    its access key (so GetCallerIdentity names it)."""
    iam = make_client(aws, "iam")
    iam.create_user(UserName=name)
    arn = iam.create_policy(PolicyName=f"{name}-policy",
                            PolicyDocument=json.dumps(document))["Policy"]["Arn"]
    iam.attach_user_policy(UserName=name, PolicyArn=arn)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    for path, value in ((aws.access_key_file, key["AccessKeyId"]),
                        (aws.secret_key_file, key["SecretAccessKey"])):
        with open(path, "w") as f:
            f.write(value + "\n")


@pytest.fixture
def listener():
    """A TCP listener on loopback standing for the collector: (host, port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()


@pytest.fixture
def cloud(account, outputs, gateway, listener, tmp_path, monkeypatch):
    """Set up on moto, the CLI talking to the gateway, the collector at ``listener`` (as a
    shared-port address), and the default VPC's main route table routed to an internet
    gateway as on AWS."""
    config.write_block("setup", config.setup_knobs(outputs))
    config.write_block("gateway", {"ANNEX_AWS_ENDPOINT_URL": gateway.url,
                                   "ANNEX_COLLECTOR": f"{listener[0]}:{listener[1]}"
                                                      "?sock=collector"})
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    route_default_vpc_out(make_client(account, "ec2"))
    _user_with_policy(account, tmp_path, shipped.load())
    return account


def _rows(out: str) -> dict[str, dict]:
    return {r["check"].split(" (")[0].split(" for ")[0]: r for r in json.loads(out)}


def test_preflight_all_ok_with_the_shipped_policy(cloud, capsys):
    code, out, err = run(["check-setup", "--preflight", "--count", "3", "--json"], capsys)
    rows = _rows(out)
    assert code == 0, out + err
    assert all(r["ok"] for r in rows.values()), rows
    assert "DryRunOperation" in rows["launch allowed"]["detail"]
    assert "6 vCPUs wanted (3 x 2)" in rows["vCPU quota"]["detail"]
    assert "user/annexer" in rows["your permissions"]["detail"]
    assert "TCP connection opened" in next(v for k, v in rows.items()
                                           if k.startswith("collector"))["detail"]
    assert "0.0.0.0/0 via igw-" in rows["annex subnet reaches package mirrors and S3"]["detail"]


def test_preflight_rich_table(cloud, capsys):
    code, out, err = run(["check-setup", "--preflight"], capsys)
    assert code == 0, out + err
    assert "Preflight check" in out and out.count("OK") >= 6 and "FAILED" not in out


def test_missing_permission_names_the_action_and_the_fix(cloud, tmp_path, capsys):
    doc = shipped.load()
    for stmt in doc["Statement"]:
        stmt["Action"] = [a for a in stmt["Action"] if a != "iam:PassRole"]
    doc["Statement"].append({"Effect": "Deny", "Action": "ec2:GetConsoleOutput",
                             "Resource": "*"})
    _user_with_policy(cloud, tmp_path, doc, name="partial")
    code, out, err = run(["check-setup", "--preflight", "--json"], capsys)
    assert code == 1
    row = _rows(out)["your permissions"]
    assert not row["ok"]
    assert "iam:PassRole" in row["detail"] and "ec2:GetConsoleOutput" in row["detail"]
    assert "condor-annex-user.json" in row["detail"] and "\n" not in row["detail"]


def test_quota_too_small(cloud, gateway, capsys):
    gateway.rule(ServiceQuotas).set_quota("ec2", "L-1216C47A", 8)
    code, out, err = run(["check-setup", "--preflight", "--count", "5", "--json"], capsys)
    assert code == 1
    row = _rows(out)["vCPU quota"]
    assert not row["ok"] and "10 vCPUs wanted (5 x 2), 0 running, quota 8" in row["detail"]
    assert "smaller --count" in row["detail"]


def test_dry_run_unauthorized(cloud, gateway, capsys):
    gateway.fail("ec2.RunInstances", "UnauthorizedOperation",
                 "You are not authorized to perform this operation.", status=403)
    code, out, err = run(["check-setup", "--preflight", "--json"], capsys)
    assert code == 1
    row = _rows(out)["launch allowed"]
    assert not row["ok"] and row["detail"].startswith("not allowed (UnauthorizedOperation)")


def test_collector_unreachable(cloud, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]   # nothing listens once closed
    config.write_block("gateway2", {"ANNEX_COLLECTOR": f"127.0.0.1:{closed}"})
    code, out, err = run(["check-setup", "--preflight", "--json"], capsys)
    assert code == 1
    row = next(v for k, v in _rows(out).items() if k.startswith("collector"))
    assert not row["ok"] and f"127.0.0.1:{closed} unreachable from AWS" in row["detail"]
    assert f"open tcp/{closed}" in row["detail"]


def test_subnet_without_route_out(cloud, capsys):
    ec2 = make_client(cloud, "ec2")
    for table in ec2.describe_route_tables()["RouteTables"]:
        for r in table["Routes"]:
            if r.get("DestinationCidrBlock") == "0.0.0.0/0":
                ec2.delete_route(RouteTableId=table["RouteTableId"],
                                 DestinationCidrBlock="0.0.0.0/0")
    code, out, err = run(["check-setup", "--preflight", "--json"], capsys)
    row = _rows(out)["annex subnet reaches package mirrors and S3"]
    assert code == 1 and not row["ok"] and "no route to the internet" in row["detail"]


def test_stack_gone_is_one_line_naming_setup(cloud, outputs, capsys):
    make_client(cloud, "cloudformation").delete_stack(StackName=outputs.stack_name)
    for argv in (["check-setup"], ["check-setup", "--preflight"]):
        code, out, err = run(argv, capsys)
        assert code == 2 and out == ""
        assert err.count("\n") == 1 and "no longer exists; run 'condor_annex setup'" in err


@pytest.mark.parametrize("argv, flag", [
    (["check-setup", "--count", "2"], "--count"),
    (["check-setup", "--instance-type", "m5.large"], "--instance-type"),
    (["check-setup", "--preflight", "--count", "0"], "--count"),
    (["check-setup", "--preflight", "--instance-type", "M5 large"], "--instance-type"),
])
def test_bad_flags_one_line_exit_2(account, gateway, argv, flag, capsys):
    config.write_block("gateway", {"ANNEX_AWS_ENDPOINT_URL": gateway.url})
    code, out, err = run(argv, capsys)
    assert code == 2 and err.startswith(f"condor_annex: {flag}") and err.count("\n") == 1
    assert gateway.count() == 0


# --- the local cloud's answers ---------------------------------------------------------------

def test_service_quotas_answers_ec2_vcpu_quota(aws, gateway):
    sq = make_client(aws.__class__(**{**aws.__dict__, "endpoint_url": gateway.url}),
                     "service-quotas")
    quota = sq.get_service_quota(ServiceCode="ec2", QuotaCode="L-1216C47A")["Quota"]
    assert quota["Value"] == 256 and quota["QuotaCode"] == "L-1216C47A"
    assert quota["QuotaArn"] == "arn:aws:servicequotas:us-east-1:123456789012:ec2/L-1216C47A"
    gateway.rule(ServiceQuotas).set_quota("ec2", "L-1216C47A", 5)
    assert sq.get_service_quota(ServiceCode="ec2", QuotaCode="L-1216C47A")["Quota"][
        "Value"] == 5
    with pytest.raises(ClientError) as e:   # not ours: moto's answer
        sq.get_service_quota(ServiceCode="ec2", QuotaCode="L-00000000")
    assert e.value.response["Error"]["Code"] == "NoSuchResourceException"


def _decisions(iam, arn, actions, resources):
    res = iam.simulate_principal_policy(PolicySourceArn=arn, ActionNames=actions,
                                        ResourceArns=resources)["EvaluationResults"]
    return {(r["EvalActionName"], r["EvalResourceName"]): r["EvalDecision"] for r in res}


def test_policy_simulation_of_users_and_roles(aws, gateway):
    gw = aws.__class__(**{**aws.__dict__, "endpoint_url": gateway.url})
    iam = make_client(gw, "iam")
    iam.create_user(UserName="u")
    iam.put_user_policy(UserName="u", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"},
            {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"}]}))
    iam.create_group(GroupName="g")
    iam.add_user_to_group(GroupName="g", UserName="u")
    iam.put_group_policy(GroupName="g", PolicyName="gp", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "ec2:Describe*", "Resource": "*"}]}))
    user = iam.get_user(UserName="u")["User"]["Arn"]
    got = _decisions(iam, user, ["s3:GetObject", "s3:DeleteObject", "ec2:DescribeInstances",
                                 "ec2:RunInstances"], ["arn:aws:s3:::b/k", "arn:aws:s3:::c/k"])
    assert got[("s3:GetObject", "arn:aws:s3:::b/k")] == "allowed"
    assert got[("s3:GetObject", "arn:aws:s3:::c/k")] == "implicitDeny"
    assert got[("s3:DeleteObject", "arn:aws:s3:::b/k")] == "explicitDeny"
    assert got[("ec2:DescribeInstances", "arn:aws:s3:::c/k")] == "allowed"   # from the group
    assert got[("ec2:RunInstances", "arn:aws:s3:::b/k")] == "implicitDeny"
    # A role with a permissions boundary: allowed only where both allow.
    boundary = iam.create_policy(PolicyName="bound", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}))["Policy"]["Arn"]
    role = iam.create_role(RoleName="r", AssumeRolePolicyDocument="{}",
                           PermissionsBoundary=boundary)["Role"]["Arn"]
    iam.put_role_policy(RoleName="r", PolicyName="p", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": "*"}]}))
    got = _decisions(iam, role, ["s3:GetObject", "s3:PutObject"], ["arn:aws:s3:::b/k"])
    assert got == {("s3:GetObject", "arn:aws:s3:::b/k"): "allowed",
                   ("s3:PutObject", "arn:aws:s3:::b/k"): "implicitDeny"}
    with pytest.raises(ClientError) as e:
        iam.simulate_principal_policy(PolicySourceArn="arn:aws:iam::123456789012:user/nobody",
                                      ActionNames=["s3:GetObject"])
    assert e.value.response["Error"]["Code"] == "NoSuchEntity"


def test_synchronous_probe_invoke(aws, gateway, function_arn, listener):
    gw = aws.__class__(**{**aws.__dict__, "endpoint_url": gateway.url})
    answer = make_client(gw, "lambda").invoke(
        FunctionName=function_arn, Payload=json.dumps(
            {"Probe": {"Host": listener[0], "Port": listener[1]}}).encode())
    out = json.loads(answer["Payload"].read())
    assert answer["StatusCode"] == 200 and out["Status"] == "OK"


# --- pure helpers ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("cm.example.org", ("cm.example.org", 9618)),
    ("cm.example.org:9620", ("cm.example.org", 9620)),
    ("cm.example.org:9618?sock=collector", ("cm.example.org", 9618)),
    ("<10.0.0.5:9618?addrs=10.0.0.5-9618&sock=collector>", ("10.0.0.5", 9618)),
    ("[2001:db8::1]:9618?sock=collector", ("2001:db8::1", 9618)),
])
def test_collector_address_understands_shared_port(text, expected):
    assert collector_address(text) == expected


def test_probe_in_the_lease_handler(listener):
    ok = probe({"Host": f"{listener[0]}:{listener[1]}?sock=collector"})
    assert ok["Status"] == "OK" and ok["Address"] == f"{listener[0]}:{listener[1]}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bad = probe({"Host": "127.0.0.1", "Port": port}, timeout_s=2)
    assert bad["Status"] == "error" and "ConnectionRefused" in bad["Error"]


def test_assumed_role_is_simulated_as_its_role():
    assert caller_principal("arn:aws:sts::111122223333:assumed-role/Admin/alice") == \
        "arn:aws:iam::111122223333:role/Admin"
    assert caller_principal("arn:aws:iam::111122223333:user/bob") == \
        "arn:aws:iam::111122223333:user/bob"
