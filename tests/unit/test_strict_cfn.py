"""CloudFormation resources moto skips are created by the gateway, or the stack fails loudly
(:mod:`condor_annex.providers.local.strict_cfn`), proved with real boto3 clients against the
gateway in front of the moto server.  On moto alone every one of these stacks is
CREATE_COMPLETE with the schedule, alarm and invoke config missing."""

from __future__ import annotations

import json
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

ONE_TRY = Config(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=60)

TEMPLATE = """
Parameters:
  Retries:
    Type: Number
    Default: 2
  Reserve:
    Type: Number
    Default: 7
Conditions:
  Reserving: !Not [!Equals [!Ref Reserve, 0]]
  Never: !Equals [a, b]
Resources:
  Queue:
    Type: AWS::SQS::Queue
  Role:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - {Effect: Allow, Principal: {Service: lambda.amazonaws.com}, Action: sts:AssumeRole}
  Function:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: python3.12
      Handler: index.handler
      Role: !GetAtt Role.Arn
      Timeout: 300
      ReservedConcurrentExecutions: !If [Reserving, !Ref Reserve, !Ref AWS::NoValue]
      Code:
        ZipFile: "def handler(event, context):\\n    return 1\\n"
  InvokeConfig:
    Type: AWS::Lambda::EventInvokeConfig
    Properties:
      FunctionName: !Ref Function
      Qualifier: $LATEST
      MaximumRetryAttempts: !Ref Retries
      DestinationConfig:
        OnFailure:
          Destination: !GetAtt Queue.Arn
  Sweep:
    Type: AWS::Scheduler::Schedule
    Properties:
      Name: !Sub "${AWS::StackName}-lease-sweep"
      ScheduleExpression: rate(5 minutes)
      FlexibleTimeWindow: {Mode: "OFF"}
      Target:
        Arn: !GetAtt Function.Arn
        RoleArn: !GetAtt Role.Arn
        Input: !Sub '{"Sweep": true, "Queue": "${Queue.QueueName}"}'
  Alarm:
    Type: AWS::CloudWatch::Alarm
    Properties:
      AlarmDescription: lease events failed
      Namespace: AWS/SQS
      MetricName: ApproximateNumberOfMessagesVisible
      Dimensions:
        - Name: QueueName
          Value: !GetAtt Queue.QueueName
      Statistic: Maximum
      Period: 60
      EvaluationPeriods: 1
      Threshold: 1
      ComparisonOperator: GreaterThanOrEqualToThreshold
  NeverMade:
    Type: AWS::CloudWatch::Alarm
    Condition: Never
    Properties: {}
Outputs:
  SweepName:
    Value: !Ref Sweep
    Description: the sweep
"""


def client(service: str, url: str):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", config=ONE_TRY)


@pytest.fixture
def gw(gateway):
    urllib.request.urlopen(urllib.request.Request(gateway.url + "/moto-api/reset",
                                                  method="POST"), timeout=10).read()
    return gateway


def stack(cfn, name: str) -> dict:
    return cfn.describe_stacks(StackName=name)["Stacks"][0]


def outputs(cfn, name: str) -> dict:
    return {o["OutputKey"]: o["OutputValue"] for o in stack(cfn, name).get("Outputs", [])}


def test_skipped_resources_are_made_resolved_and_listed(gw):
    cfn, url = client("cloudformation", gw.url), gw.url
    cfn.create_stack(StackName="annex", TemplateBody=TEMPLATE)

    assert stack(cfn, "annex")["StackStatus"] == "CREATE_COMPLETE"
    res = {r["LogicalResourceId"]: r for r in cfn.list_stack_resources(StackName="annex")[
        "StackResourceSummaries"]}
    queue_url = res["Queue"]["PhysicalResourceId"]
    queue_arn = client("sqs", url).get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    function = client("lambda", url).get_function(FunctionName=res["Function"][
        "PhysicalResourceId"])["Configuration"]

    sweep = client("scheduler", url).get_schedule(Name="annex-lease-sweep")
    assert sweep["ScheduleExpression"] == "rate(5 minutes)"
    assert sweep["Target"]["Arn"] == function["FunctionArn"]
    assert json.loads(sweep["Target"]["Input"]) == {
        "Sweep": True, "Queue": queue_url.rsplit("/", 1)[-1]}
    alarm, = client("cloudwatch", url).describe_alarms(
        AlarmNamePrefix="annex-Alarm-")["MetricAlarms"]
    assert alarm["Threshold"] == 1.0 and alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": queue_url.rsplit("/", 1)[-1]}]
    invoke = client("lambda", url).get_function_event_invoke_config(
        FunctionName=function["FunctionName"], Qualifier="$LATEST")
    assert invoke["MaximumRetryAttempts"] == 2
    assert invoke["DestinationConfig"]["OnFailure"]["Destination"] == queue_arn
    assert client("lambda", url).get_function_concurrency(
        FunctionName=function["FunctionName"])["ReservedConcurrentExecutions"] == 7

    assert {k: res[k]["ResourceType"] for k in ("Sweep", "Alarm", "InvokeConfig")} == {
        "Sweep": "AWS::Scheduler::Schedule", "Alarm": "AWS::CloudWatch::Alarm",
        "InvokeConfig": "AWS::Lambda::EventInvokeConfig"}
    assert "NeverMade" not in res and all(res)    # no blank entries
    assert res["Sweep"]["PhysicalResourceId"] == "annex-lease-sweep"
    described = {r["LogicalResourceId"] for r in cfn.describe_stack_resources(
        StackName="annex")["StackResources"]}
    assert {"Sweep", "Alarm", "InvokeConfig", "Queue"} <= described
    assert outputs(cfn, "annex") == {"SweepName": "annex-lease-sweep"}   # moto drops it


@pytest.mark.parametrize("resource,reason", [
    ("Pair:\n    Type: AWS::EC2::KeyPair\n    Properties: {KeyName: k}",
     "Pair (AWS::EC2::KeyPair): moto's CloudFormation skips this type"),
    ("Bad:\n    Type: AWS::Scheduler::Schedule\n    Properties:\n"
     "      ScheduleExpression: rate(1 minute)\n      FlexibleTimeWindow: {Mode: 'OFF'}\n"
     "      Target: {Arn: !GetAtt Queue.Nope, RoleArn: arn:aws:iam::123456789012:role/r}",
     "Bad (AWS::Scheduler::Schedule): Fn::GetAtt Queue.Nope"),
    ("Odd:\n    Type: AWS::CloudWatch::Alarm\n    Properties: {Colour: blue}",
     "Odd (AWS::CloudWatch::Alarm): Odd.Colour: not a property"),
])
def test_a_resource_that_cannot_be_made_fails_the_stack_naming_it(gw, resource, reason):
    cfn = client("cloudformation", gw.url)
    body = f"Resources:\n  Queue:\n    Type: AWS::SQS::Queue\n  {resource}\n"
    cfn.create_stack(StackName="broken", TemplateBody=body)

    described = stack(cfn, "broken")
    assert described["StackStatus"] == "CREATE_FAILED"
    assert reason in described["StackStatusReason"]
    events = cfn.describe_stack_events(StackName="broken")["StackEvents"]
    assert events[0]["ResourceStatus"] == "CREATE_FAILED" and \
        reason in events[0]["ResourceStatusReason"]


def test_setup_through_the_gateway_fails_loudly_on_a_broken_stack(account, gateway, tmp_path,
                                                                   monkeypatch, capsys):
    """What the user sees when the emulator refuses a skipped resource: setup exits 1 naming
    it (here the schedule: Scheduler refuses every CreateSchedule)."""
    from condor_annex import config
    from condor_annex.cli.main import main
    from condor_annex.providers.local import strict_cfn

    config.write_block("gateway", {"ANNEX_AWS_ENDPOINT_URL": gateway.url})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(strict_cfn.HANDLERS, "AWS::Scheduler::Schedule", strict_cfn.Handler(
        "scheduler", "CreateSchedule", lambda *a: (_ for _ in ()).throw(
            strict_cfn.Unresolvable("refused")), lambda c, m: None))

    assert main(["setup"]) == 1
    err = capsys.readouterr().err
    assert "CREATE_FAILED" in err and "(AWS::Scheduler::Schedule): refused" in err


def test_setup_stack_has_every_resource_of_its_template(account, gateway, tmp_path,
                                                        monkeypatch):
    """The product's own stack, made through the gateway: every resource its template declares
    (conditions aside) is listed, and each one moto skips exists in its service."""
    from condor_annex import config
    from condor_annex.cli.main import main
    from condor_annex.providers.local.strict_cfn import parse_template

    config.write_block("gateway", {"ANNEX_AWS_ENDPOINT_URL": gateway.url})
    monkeypatch.chdir(tmp_path)
    assert main(["setup"]) == 0
    cfn = client("cloudformation", gateway.url)
    name = cfn.describe_stacks()["Stacks"][0]["StackName"]
    template = parse_template(cfn.get_template(StackName=name)["TemplateBody"])
    listed = {r["LogicalResourceId"] for r in cfn.list_stack_resources(StackName=name)[
        "StackResourceSummaries"]}

    declared = {lid for lid, r in template["Resources"].items() if "Condition" not in r}
    assert declared <= listed, declared - listed
    made = gateway.rule(__import__("condor_annex.providers.local.strict_cfn",
                                   fromlist=["StackResources"]).StackResources).made(name)
    sched = client("scheduler", gateway.url)
    for m in made.values():
        if m.type == "AWS::Scheduler::Schedule":
            sched.get_schedule(Name=m.physical_id)   # raises when missing


def test_update_remakes_what_changed_and_delete_removes_everything(gw):
    cfn, url = client("cloudformation", gw.url), gw.url
    cfn.create_stack(StackName="annex", TemplateBody=TEMPLATE)
    sched, cw = client("scheduler", url), client("cloudwatch", url)
    assert cw.describe_alarms(AlarmNamePrefix="annex-Alarm-")["MetricAlarms"]

    changed = TEMPLATE.replace("rate(5 minutes)", "rate(10 minutes)")
    changed = changed[:changed.index("  Alarm:")] + changed[changed.index("  NeverMade:"):]
    cfn.update_stack(StackName="annex", TemplateBody=changed)

    assert stack(cfn, "annex")["StackStatus"] == "UPDATE_COMPLETE"
    assert sched.get_schedule(Name="annex-lease-sweep")["ScheduleExpression"] == \
        "rate(10 minutes)"
    assert cw.describe_alarms(AlarmNamePrefix="annex-Alarm-")["MetricAlarms"] == []

    cfn.delete_stack(StackName="annex")

    with pytest.raises(ClientError) as e:
        sched.get_schedule(Name="annex-lease-sweep")
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
