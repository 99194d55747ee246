"""CloudFormation resources moto skips: created by the gateway, or the stack fails loudly (a
gateway strict rule).

moto's CloudFormation (``moto/cloudformation/parsing.py``) creates only the resource types it
has a model for; any other type (``AWS::Scheduler::Schedule``, ``AWS::CloudWatch::Alarm``,
``AWS::Lambda::EventInvokeConfig``, ``AWS::S3::BucketPolicy``...) is skipped with a log warning,
and the stack still reaches CREATE_COMPLETE.  On AWS a stack is CREATE_COMPLETE only when every
resource was created ("If any resource fails to be created, CloudFormation rolls back the
stack": docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/stack-failure-options.html,
stack status codes: .../using-cfn-describing-stacks.html).

So, when a stack reaches CREATE_COMPLETE or UPDATE_COMPLETE (seen right after the CreateStack /
UpdateStack the gateway forwards, and in every DescribeStacks reply), the gateway reads the
stack's template (GetTemplate), finds the resources moto did not make (missing from
ListStackResources), resolves their properties (``Ref``, ``Fn::GetAtt``, ``Fn::Sub``,
``Fn::Join``, ``Fn::Select``, ``Fn::Split``, pseudo parameters) against the stack's parameters and
resources, and creates each through the emulator's own API (:data:`HANDLERS`: Scheduler
CreateSchedule / CreateScheduleGroup, CloudWatch PutMetricAlarm, Lambda
PutFunctionEventInvokeConfig, S3 PutBucketPolicy), properties checked and typed against
botocore's model of that API.  A property moto's own model ignores is applied too
(``ReservedConcurrentExecutions`` of a function: PutFunctionConcurrency; ``LifecycleConfiguration``
of a bucket: PutBucketLifecycleConfiguration).  What it made shows in
ListStackResources / DescribeStackResources replies and in the stack's outputs; an update
re-creates what changed and deletes what left the template; DeleteStack deletes it all first.

Anything it cannot create or resolve (a type without a handler, a condition, an unknown
property, an API error) turns the stack CREATE_FAILED (UPDATE_FAILED for an update) in
DescribeStacks replies, with a StackStatusReason naming the resource, and a ``*_FAILED`` event in
DescribeStackEvents — never a CREATE_COMPLETE stack missing a resource.
"""

from __future__ import annotations

import json
import logging
import random
import re
import string
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

from condor_annex.providers.local.gateway_call import Call
from condor_annex.providers.local.gateway_replies import Reply
from condor_annex.providers.local.gateway_replies import xml_bytes as _xml_bytes
from condor_annex.providers.local.gateway_replies import xml_ns as _ns
from condor_annex.providers.local.gateway_strict import Refusal, StrictRule

log = logging.getLogger(__name__)

_COMPLETE = ("CREATE_COMPLETE", "UPDATE_COMPLETE")


class Unresolvable(Exception):
    """A template value or resource the local cloud cannot resolve or create."""


# --------------------------------------------------------------------------------------------
# Templates


class _TemplateLoader:
    """YAML with CloudFormation's short forms (``!Ref X``, ``!GetAtt A.B``, ``!Sub ...``)."""

    @staticmethod
    def load(text: str) -> dict:
        import yaml

        class Loader(yaml.SafeLoader):
            pass

        def short(loader, suffix, node):
            if isinstance(node, yaml.ScalarNode):
                value = loader.construct_scalar(node)
            elif isinstance(node, yaml.SequenceNode):
                value = loader.construct_sequence(node, deep=True)
            else:
                value = loader.construct_mapping(node, deep=True)
            if suffix == "Ref":
                return {"Ref": value}
            if suffix == "GetAtt" and isinstance(value, str):
                value = value.split(".", 1)
            return {f"Fn::{suffix}": value}

        Loader.add_multi_constructor("!", short)
        return yaml.load(text, Loader=Loader)   # noqa: S506 - SafeLoader subclass


def parse_template(body) -> dict:
    """A template body (JSON or YAML text, or botocore's already-decoded JSON) as a dict.

    Raises:
        Unresolvable: not a template.
    """
    if isinstance(body, dict):
        return body
    try:
        return json.loads(body)
    except ValueError:
        pass
    try:
        data = _TemplateLoader.load(body)
    except Exception as e:  # noqa: BLE001 - yaml's errors
        raise Unresolvable(f"template does not parse: {e}") from None
    if not isinstance(data, dict):
        raise Unresolvable("template is not a mapping")
    return data


def _refs(value) -> set[str]:
    """Logical names a template value refers to (Ref, GetAtt, ${X} / ${X.Attr} in Sub)."""
    out: set[str] = set()
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "Ref" and isinstance(v, str):
                out.add(v)
            elif k == "Fn::GetAtt":
                out.add((v.split(".", 1) if isinstance(v, str) else v)[0])
            elif k == "Fn::Sub":
                text = v if isinstance(v, str) else v[0]
                out |= {m.split(".", 1)[0] for m in re.findall(r"\$\{(?!!)([^}]+)\}", text)}
                if isinstance(v, list) and len(v) > 1:
                    out |= _refs(v[1])
            else:
                out |= _refs(v)
    elif isinstance(value, list):
        for v in value:
            out |= _refs(v)
    return out


_NO_VALUE = object()


@dataclass
class Made:
    """A resource the gateway created for a stack.

    Attributes:
        logical_id, type: as in the template.
        physical_id: what CloudFormation would report (a name, an ARN or a function:qualifier).
        attrs: its ``Fn::GetAtt`` attributes (``Arn``...).
        params: the API parameters it was made with (an update compares them).
        extra: what its handler needs to delete it.
        made_at: when (UTC).
    """

    logical_id: str
    type: str
    physical_id: str
    attrs: dict
    params: dict
    extra: dict = field(default_factory=dict)
    made_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


@dataclass
class _Stack:
    stack_id: str
    name: str
    region: str
    made: dict[str, Made] = field(default_factory=dict)
    failure: tuple[str, str] | None = None   # (logical id, reason)
    outputs: dict[str, tuple[str, str]] = field(default_factory=dict)  # key: (value, description)
    settled: tuple | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Resolver:
    """Resolves template values against one stack: parameters, moto's resources, ours."""

    def __init__(self, rule: StackResources, stack: _Stack, template: dict, params: dict,
                 resources: dict[str, tuple[str, str]]) -> None:
        self.rule, self.stack, self.template = rule, stack, template
        self.params, self.resources = params, resources
        parts = stack.stack_id.split(":")
        self.account = parts[4] if len(parts) > 4 else "123456789012"

    def client(self, service: str):
        return self.rule.gateway.upstream_client(service, self.stack.region)

    def resolve(self, value):
        if isinstance(value, dict):
            if len(value) == 1:
                (k, v), = value.items()
                if k == "Ref":
                    return self.ref(v)
                if k == "Fn::GetAtt":
                    name, attr = v.split(".", 1) if isinstance(v, str) else v
                    return self.getatt(name, attr)
                if k == "Fn::Sub":
                    return self.sub(v)
                if k == "Fn::Join":
                    delim, items = v
                    return delim.join(str(x) for x in self.resolve(items))
                if k == "Fn::Select":
                    index, items = v
                    return self.resolve(items)[int(self.resolve(index))]
                if k == "Fn::Split":
                    delim, text = v
                    return str(self.resolve(text)).split(delim)
                if k == "Fn::If":
                    name, yes, no = v
                    return self.resolve(yes if self.condition(name) else no)
                if k.startswith("Fn::") or k == "Condition":
                    raise Unresolvable(f"{k} is not supported by the local cloud")
            out = {}
            for k, v in value.items():
                r = self.resolve(v)
                if r is not _NO_VALUE:
                    out[k] = r
            return out
        if isinstance(value, list):
            return [r for r in (self.resolve(v) for v in value) if r is not _NO_VALUE]
        return value

    def condition(self, name: str) -> bool:
        """The value of the template's condition ``name`` (Fn::Equals / Not / And / Or)."""
        conditions = self.template.get("Conditions") or {}
        if name not in conditions:
            raise Unresolvable(f"Condition {name}: not in the template")
        return self._truth(conditions[name])

    def _truth(self, value) -> bool:
        if isinstance(value, dict) and len(value) == 1:
            (k, v), = value.items()
            if k == "Condition":
                return self.condition(v)
            if k == "Fn::Equals":
                a, b = (self.resolve(x) for x in v)
                return str(a) == str(b)
            if k == "Fn::Not":
                return not self._truth(v[0])
            if k == "Fn::And":
                return all(self._truth(x) for x in v)
            if k == "Fn::Or":
                return any(self._truth(x) for x in v)
        if isinstance(value, bool):
            return value
        raise Unresolvable(f"condition {value!r} is not supported by the local cloud")

    def ref(self, name: str):
        pseudo = {"AWS::StackName": self.stack.name, "AWS::StackId": self.stack.stack_id,
                  "AWS::Region": self.stack.region, "AWS::AccountId": self.account,
                  "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com"}
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in pseudo:
            return pseudo[name]
        if name in self.params:
            return self.params[name]
        if name in self.stack.made:
            return self.stack.made[name].physical_id
        if name in self.resources:
            return self.resources[name][1]
        raise Unresolvable(f"Ref {name}: no such parameter or resource")

    def getatt(self, name: str, attr: str):
        if name in self.stack.made:
            made = self.stack.made[name]
            if attr in made.attrs:
                return made.attrs[attr]
            raise Unresolvable(f"Fn::GetAtt {name}.{attr}: unknown attribute")
        if name not in self.resources:
            raise Unresolvable(f"Fn::GetAtt {name}.{attr}: no such resource")
        rtype, physical = self.resources[name]
        getter = _ATTRS.get((rtype, attr))
        if getter is None:
            raise Unresolvable(f"Fn::GetAtt {name}.{attr} ({rtype}): not known to the local "
                               "cloud")
        try:
            return getter(self, physical)
        except Unresolvable:
            raise
        except Exception as e:  # noqa: BLE001 - botocore errors
            raise Unresolvable(f"Fn::GetAtt {name}.{attr}: {e}") from None

    def sub(self, value):
        text, names = (value, {}) if isinstance(value, str) else (value[0], value[1])
        names = {k: self.resolve(v) for k, v in names.items()}

        def one(m: re.Match) -> str:
            inner = m.group(1)
            if inner.startswith("!"):
                return "${" + inner[1:] + "}"
            if inner in names:
                return str(names[inner])
            if "." in inner and not inner.startswith("AWS::"):
                return str(self.getatt(*inner.split(".", 1)))
            return str(self.ref(inner))

        return re.sub(r"\$\{([^}]+)\}", one, text)


#: (resource type, attribute) → how to read it from the resource moto made (physical id).
_ATTRS: dict[tuple[str, str], Callable[[_Resolver, str], object]] = {
    ("AWS::Lambda::Function", "Arn"): lambda r, p: r.client("lambda").get_function(
        FunctionName=p)["Configuration"]["FunctionArn"],
    ("AWS::IAM::Role", "Arn"): lambda r, p: r.client("iam").get_role(RoleName=p)["Role"]["Arn"],
    ("AWS::IAM::Role", "RoleId"): lambda r, p: r.client("iam").get_role(
        RoleName=p)["Role"]["RoleId"],
    ("AWS::IAM::InstanceProfile", "Arn"): lambda r, p: r.client("iam").get_instance_profile(
        InstanceProfileName=p)["InstanceProfile"]["Arn"],
    ("AWS::SQS::Queue", "Arn"): lambda r, p: r.client("sqs").get_queue_attributes(
        QueueUrl=p, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"],
    ("AWS::SQS::Queue", "QueueName"): lambda r, p: p.rstrip("/").rsplit("/", 1)[-1],
    ("AWS::SQS::Queue", "QueueUrl"): lambda r, p: p,
    ("AWS::S3::Bucket", "Arn"): lambda r, p: f"arn:aws:s3:::{p}",
    ("AWS::S3::Bucket", "DomainName"): lambda r, p: f"{p}.s3.amazonaws.com",
    ("AWS::EC2::SecurityGroup", "GroupId"): lambda r, p: p,
    ("AWS::Events::Rule", "Arn"): lambda r, p: r.client("events").describe_rule(Name=p)["Arn"],
    ("AWS::SNS::Topic", "TopicArn"): lambda r, p: p,
}


# --------------------------------------------------------------------------------------------
# Handlers: how to make and delete each type moto skips


def _shape(service: str, operation: str):
    return _model(service).operation_model(operation).input_shape


_MODELS: dict[str, object] = {}


def _model(service: str):
    if service not in _MODELS:
        import botocore.session
        _MODELS[service] = botocore.session.get_session().get_service_model(service)
    return _MODELS[service]


def coerce(shape, value, path: str):
    """``value`` (a resolved template property) typed as botocore's ``shape`` wants.

    Raises:
        Unresolvable: a property the API does not have, or a value of the wrong kind.
    """
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            raise Unresolvable(f"{path}: expected an object, got {value!r}")
        out = {}
        for k, v in value.items():
            if k not in shape.members:
                raise Unresolvable(f"{path}.{k}: not a property the local cloud knows")
            out[k] = coerce(shape.members[k], v, f"{path}.{k}")
        return out
    if kind == "list":
        if not isinstance(value, list):
            raise Unresolvable(f"{path}: expected a list, got {value!r}")
        return [coerce(shape.member, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if kind == "map":
        return {k: coerce(shape.value, v, f"{path}.{k}") for k, v in value.items()}
    try:
        if kind in ("integer", "long"):
            return int(value)
        if kind in ("double", "float"):
            return float(value)
    except (TypeError, ValueError):
        raise Unresolvable(f"{path}: expected a number, got {value!r}") from None
    if kind == "boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    if kind == "string" and isinstance(value, (dict, list)):
        raise Unresolvable(f"{path}: expected a string, got {value!r}")
    if kind == "string" and not isinstance(value, str):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return value


def _generated_name(stack: _Stack, logical_id: str, limit: int) -> str:
    """A name as CloudFormation makes one: ``<stack>-<logical id>-<13 random>``, within
    ``limit`` characters."""
    suffix = "".join(random.choices(string.ascii_uppercase + string.digits, k=13))
    head = f"{stack.name}-{logical_id}"[:limit - 14]
    return f"{head}-{suffix}"


@dataclass(frozen=True)
class Handler:
    """How the gateway makes one resource type moto skips.

    Attributes:
        service, operation: the API call that makes it (its input shape checks the properties).
        make: ``(resolver, stack, logical id, properties, old) -> Made``.
        delete: ``(client factory, made) -> None``.
    """

    service: str
    operation: str
    make: Callable
    delete: Callable


def _make_schedule(r: _Resolver, stack: _Stack, lid: str, props: dict, old: Made | None):
    props = dict(props)
    props.setdefault("Name", _generated_name(stack, lid, 64))
    params = coerce(_shape("scheduler", "CreateSchedule"), props, lid)
    arn = r.client("scheduler").create_schedule(**params)["ScheduleArn"]
    return Made(lid, "AWS::Scheduler::Schedule", params["Name"], {"Arn": arn}, params,
                {"GroupName": params.get("GroupName", "default")})


def _delete_schedule(client, made: Made) -> None:
    client("scheduler").delete_schedule(Name=made.physical_id,
                                        GroupName=made.extra.get("GroupName", "default"))


def _make_schedule_group(r, stack, lid, props, old):
    props = dict(props)
    props.setdefault("Name", _generated_name(stack, lid, 64))
    params = coerce(_shape("scheduler", "CreateScheduleGroup"), props, lid)
    arn = r.client("scheduler").create_schedule_group(**params)["ScheduleGroupArn"]
    return Made(lid, "AWS::Scheduler::ScheduleGroup", params["Name"], {"Arn": arn}, params)


def _make_alarm(r: _Resolver, stack: _Stack, lid: str, props: dict, old: Made | None):
    props = dict(props)
    props.setdefault("AlarmName", _generated_name(stack, lid, 255))
    params = coerce(_shape("cloudwatch", "PutMetricAlarm"), props, lid)
    cw = r.client("cloudwatch")
    cw.put_metric_alarm(**params)
    found = cw.describe_alarms(AlarmNames=[params["AlarmName"]]).get("MetricAlarms", [])
    arn = found[0]["AlarmArn"] if found else (
        f"arn:aws:cloudwatch:{stack.region}:{r.account}:alarm:{params['AlarmName']}")
    return Made(lid, "AWS::CloudWatch::Alarm", params["AlarmName"], {"Arn": arn}, params)


def _make_invoke_config(r: _Resolver, stack: _Stack, lid: str, props: dict, old: Made | None):
    params = coerce(_shape("lambda", "PutFunctionEventInvokeConfig"), props, lid)
    r.client("lambda").put_function_event_invoke_config(**params)
    physical = f"{params['FunctionName']}:{params.get('Qualifier', '$LATEST')}"
    return Made(lid, "AWS::Lambda::EventInvokeConfig", physical, {}, params)


def _delete_invoke_config(client, made: Made) -> None:
    kw = {k: made.params[k] for k in ("FunctionName", "Qualifier") if k in made.params}
    client("lambda").delete_function_event_invoke_config(**kw)


def _make_bucket_policy(r: _Resolver, stack: _Stack, lid: str, props: dict, old: Made | None):
    props = dict(props)
    if isinstance(props.get("PolicyDocument"), dict):
        props["Policy"] = json.dumps(props.pop("PolicyDocument"))
    params = coerce(_shape("s3", "PutBucketPolicy"), props, lid)
    r.client("s3").put_bucket_policy(**params)
    return Made(lid, "AWS::S3::BucketPolicy", params["Bucket"], {}, params)


#: The resource types moto skips that the gateway makes itself.
HANDLERS: dict[str, Handler] = {
    "AWS::Scheduler::Schedule": Handler("scheduler", "CreateSchedule", _make_schedule,
                                        _delete_schedule),
    "AWS::Scheduler::ScheduleGroup": Handler(
        "scheduler", "CreateScheduleGroup", _make_schedule_group,
        lambda c, m: c("scheduler").delete_schedule_group(Name=m.physical_id)),
    "AWS::CloudWatch::Alarm": Handler(
        "cloudwatch", "PutMetricAlarm", _make_alarm,
        lambda c, m: c("cloudwatch").delete_alarms(AlarmNames=[m.physical_id])),
    "AWS::Lambda::EventInvokeConfig": Handler(
        "lambda", "PutFunctionEventInvokeConfig", _make_invoke_config, _delete_invoke_config),
    "AWS::S3::BucketPolicy": Handler(
        "s3", "PutBucketPolicy", _make_bucket_policy,
        lambda c, m: c("s3").delete_bucket_policy(Bucket=m.physical_id)),
}


# --------------------------------------------------------------------------------------------
# The rule


class StackResources(StrictRule):
    """The rule of the module docstring.  :meth:`settle` is also callable from tests."""

    def __init__(self, gateway) -> None:
        super().__init__(gateway)
        self._lock = threading.Lock()
        self._stacks: dict[str, _Stack] = {}   # by stack id

    def _stack(self, stack_id: str, name: str, region: str) -> _Stack:
        with self._lock:
            return self._stacks.setdefault(stack_id, _Stack(stack_id, name, region))

    def _find(self, name_or_id: str) -> list[_Stack]:
        with self._lock:
            return [s for s in self._stacks.values() if name_or_id in (s.stack_id, s.name)]

    def forget(self) -> None:
        with self._lock:
            self._stacks.clear()

    def made(self, stack: str) -> dict[str, Made]:
        """What the gateway made for ``stack`` (name or id): logical id → :class:`Made`."""
        found = self._find(stack)
        return dict(found[-1].made) if found else {}

    # hooks ----------------------------------------------------------------------------------

    def before(self, call: Call) -> Refusal | None:
        if call.service == "cloudformation" and call.operation == "DeleteStack":
            for stack in self._find(call.param("StackName") or ""):
                self._delete_all(stack)
                with self._lock:
                    self._stacks.pop(stack.stack_id, None)
        return None

    def after(self, call: Call, reply: Reply) -> Reply:
        if call.service != "cloudformation" or reply[0] != 200:
            return reply
        op = call.operation
        if op in ("CreateStack", "UpdateStack"):
            cfn = self.gateway.upstream_client("cloudformation", call.region)
            try:
                stack = cfn.describe_stacks(StackName=call.param("StackName") or "")["Stacks"][0]
            except Exception:  # noqa: BLE001 - DescribeStacks will settle it later
                return reply
            self.settle(call.region, stack["StackId"], stack["StackName"], stack["StackStatus"],
                        stack.get("LastUpdatedTime") or "")
            return reply
        if op == "DescribeStacks":
            return self._amend_describe_stacks(call, reply)
        if op in ("ListStackResources", "DescribeStackResources"):
            return self._amend_resources(call, reply)
        if op == "DescribeStackEvents":
            return self._amend_events(call, reply)
        return reply

    # settling -------------------------------------------------------------------------------

    def settle(self, region: str, stack_id: str, name: str, status: str,
               updated: str | datetime = "") -> tuple[str, str] | None:
        """Make what moto skipped for a stack that reached ``status`` (once per status and
        update time).

        Args:
            region: the stack's region.
            stack_id, name: the stack's ARN and name.
            status: its status as moto reports it.
            updated: its ``LastUpdatedTime`` (distinguishes two updates).

        Returns:
            ``(logical id, reason)`` of the failure that fails the stack, or None.
        """
        if status not in _COMPLETE:
            return None
        stack = self._stack(stack_id, name, region or "us-east-1")
        key = (status, _instant(updated))
        with stack.lock:
            if stack.settled == key:
                return stack.failure
            try:
                stack.failure = self._settle(stack, status)
            except Unresolvable as e:
                stack.failure = ("", str(e))
            except Exception as e:  # noqa: BLE001 - moto unreachable: a loud failure too
                log.exception("settling stack %s failed", name)
                stack.failure = ("", f"the local cloud could not complete the stack: {e}")
            if stack.failure:
                log.warning("stack %s: %s", name, stack.failure)
            stack.settled = key
            return stack.failure

    def _settle(self, stack: _Stack, status: str) -> tuple[str, str] | None:
        client = lambda s: self.gateway.upstream_client(s, stack.region)  # noqa: E731
        cfn = client("cloudformation")
        template = parse_template(cfn.get_template(StackName=stack.stack_id)["TemplateBody"])
        described = cfn.describe_stacks(StackName=stack.stack_id)["Stacks"][0]
        params = {}
        for k, spec in (template.get("Parameters") or {}).items():
            if isinstance(spec, dict) and "Default" in spec:
                params[k] = spec["Default"]
        params.update({p["ParameterKey"]: p.get("ParameterValue", "")
                       for p in described.get("Parameters", [])})
        for k, spec in (template.get("Parameters") or {}).items():
            if isinstance(spec, dict) and spec.get("Type") == "CommaDelimitedList" and \
                    isinstance(params.get(k), str):
                params[k] = params[k].split(",")
        resources = {}
        for page in cfn.get_paginator("list_stack_resources").paginate(
                StackName=stack.stack_id):
            for r in page["StackResourceSummaries"]:
                if r.get("LogicalResourceId"):
                    resources[r["LogicalResourceId"]] = (r["ResourceType"],
                                                         r.get("PhysicalResourceId", ""))
        resolver = _Resolver(self, stack, template, params, resources)
        declared = {lid: res for lid, res in (template.get("Resources") or {}).items()
                    if "Condition" not in res or resolver.condition(res["Condition"])}
        skipped = {lid: res for lid, res in declared.items() if lid not in resources}
        for lid in [lid for lid in stack.made if lid not in skipped]:   # left the template
            self._delete(stack, stack.made.pop(lid))
        failure = None
        for lid in _ordered(skipped):
            res = skipped[lid]
            rtype = res.get("Type", "")
            try:
                self._make(resolver, stack, lid, res)
            except Unresolvable as e:
                failure = failure or (lid, f"{lid} ({rtype}): {e}")
            except Exception as e:  # noqa: BLE001 - the emulator refused: say which and why
                failure = failure or (lid, f"{lid} ({rtype}): {type(e).__name__}: {e}")
        for lid, res in declared.items():
            if lid in resources:
                try:
                    _apply_ignored(resolver, lid, res, resources[lid][1])
                except Exception as e:  # noqa: BLE001
                    failure = failure or (lid, f"{lid} ({res.get('Type')}): {e}")
        stack.outputs = {}
        for key, out in (template.get("Outputs") or {}).items():
            if "Condition" in out and not resolver.condition(out["Condition"]):
                continue
            if _refs(out.get("Value")) & set(skipped):
                try:
                    stack.outputs[key] = (str(resolver.resolve(out["Value"])),
                                          str(out.get("Description", "")))
                except Unresolvable as e:
                    failure = failure or (key, f"output {key}: {e}")
        return failure

    def _make(self, resolver: _Resolver, stack: _Stack, lid: str, res: dict) -> None:
        rtype = res.get("Type", "")
        handler = HANDLERS.get(rtype)
        if handler is None:
            raise Unresolvable("moto's CloudFormation skips this type and the local cloud "
                               "cannot create it")
        props = resolver.resolve(res.get("Properties") or {})
        old = stack.made.get(lid)
        if old is not None:
            probe = coerce(_shape(handler.service, handler.operation),
                           {**props, **{k: v for k, v in old.params.items()
                                        if k not in props and k in ("Name", "AlarmName")}}, lid)
            if probe == old.params:
                return   # unchanged by the update
            self._delete(stack, stack.made.pop(lid))
        stack.made[lid] = handler.make(resolver, stack, lid, props, old)
        log.info("stack %s: made %s (%s) %s", stack.name, lid, rtype, stack.made[lid].physical_id)

    def _delete(self, stack: _Stack, made: Made) -> None:
        client = lambda s: self.gateway.upstream_client(s, stack.region)  # noqa: E731
        try:
            HANDLERS[made.type].delete(client, made)
        except Exception:  # noqa: BLE001 - already gone
            log.info("stack %s: deleting %s failed (gone?)", stack.name, made.logical_id,
                     exc_info=True)

    def _delete_all(self, stack: _Stack) -> None:
        with stack.lock:
            for lid in reversed(list(stack.made)):
                self._delete(stack, stack.made.pop(lid))

    # replies --------------------------------------------------------------------------------

    def _amend_describe_stacks(self, call: Call, reply: Reply) -> Reply:
        try:
            root = ET.fromstring(reply[2])
        except ET.ParseError:
            return reply
        ns, changed = _ns(root), False
        for member in list(root.iter(ns + "member")):   # a list: outputs may be added
            stack_id = member.findtext(ns + "StackId")
            status = member.findtext(ns + "StackStatus")
            if not stack_id or not status:
                continue
            failure = self.settle(call.region, stack_id, member.findtext(ns + "StackName") or "",
                                  status, member.findtext(ns + "LastUpdatedTime") or "")
            stack = next(iter(self._find(stack_id)), None)
            if stack is None or stack.settled is None or stack.settled[0] != status:
                continue
            if failure:
                member.find(ns + "StackStatus").text = \
                    "CREATE_FAILED" if status == "CREATE_COMPLETE" else "UPDATE_FAILED"
                reason = member.find(ns + "StackStatusReason")
                if reason is None:
                    reason = ET.SubElement(member, ns + "StackStatusReason")
                reason.text = f"The following resource(s) failed to create: [{failure[0]}]. " \
                              f"{failure[1]}"
                changed = True
            if stack.outputs:
                outputs = member.find(ns + "Outputs")
                if outputs is None:
                    outputs = ET.SubElement(member, ns + "Outputs")
                have = {o.findtext(ns + "OutputKey") for o in outputs}
                for key, (value, desc) in stack.outputs.items():
                    if key not in have:
                        o = ET.SubElement(outputs, ns + "member")
                        ET.SubElement(o, ns + "OutputKey").text = key
                        ET.SubElement(o, ns + "OutputValue").text = value
                        if desc:
                            ET.SubElement(o, ns + "Description").text = desc
                        changed = True
        return (reply[0], reply[1], _xml_bytes(root)) if changed else reply

    def _amend_resources(self, call: Call, reply: Reply) -> Reply:
        """Drop moto's blank entries for skipped resources; list what the gateway made."""
        found = self._find(call.param("StackName") or "")
        try:
            root = ET.fromstring(reply[2])
        except ET.ParseError:
            return reply
        ns = _ns(root)
        listing = "StackResourceSummaries" if call.operation == "ListStackResources" \
            else "StackResources"
        parent = next(root.iter(ns + listing), None)
        if parent is None:
            return reply
        for member in list(parent):
            if not (member.findtext(ns + "LogicalResourceId") or "").strip():
                parent.remove(member)
        stack = found[-1] if found else None
        logical = call.param("LogicalResourceId")
        for made in (stack.made.values() if stack else []):
            if logical and logical != made.logical_id:
                continue
            m = ET.SubElement(parent, ns + "member")
            when = made.made_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            fields = {"LogicalResourceId": made.logical_id, "PhysicalResourceId":
                      made.physical_id, "ResourceType": made.type, "ResourceStatus":
                      "CREATE_COMPLETE"}
            if listing == "StackResources":
                fields.update(StackName=stack.name, StackId=stack.stack_id, Timestamp=when)
            else:
                fields["LastUpdatedTimestamp"] = when
            for k, v in fields.items():
                ET.SubElement(m, ns + k).text = v
        return reply[0], reply[1], _xml_bytes(root)

    def _amend_events(self, call: Call, reply: Reply) -> Reply:
        """Put the failure first in DescribeStackEvents (what ``setup`` reports)."""
        found = self._find(call.param("StackName") or "")
        if not found or not found[-1].failure:
            return reply
        stack = found[-1]
        try:
            root = ET.fromstring(reply[2])
        except ET.ParseError:
            return reply
        ns = _ns(root)
        parent = next(root.iter(ns + "StackEvents"), None)
        if parent is None:
            return reply
        lid, reason = stack.failure
        status = "UPDATE_FAILED" if (stack.settled or ("",))[0] == "UPDATE_COMPLETE" \
            else "CREATE_FAILED"
        m = ET.Element(ns + "member")
        for k, v in {"StackId": stack.stack_id, "EventId": f"{lid or 'stack'}-local-failure",
                     "StackName": stack.name, "LogicalResourceId": lid or stack.name,
                     "ResourceStatus": status, "ResourceStatusReason": reason,
                     "Timestamp": datetime.now(timezone.utc).strftime(
                         "%Y-%m-%dT%H:%M:%S.%fZ")}.items():
            ET.SubElement(m, ns + k).text = v
        parent.insert(0, m)
        return reply[0], reply[1], _xml_bytes(root)


def _instant(when: str | datetime) -> float | None:
    """A stack's ``LastUpdatedTime`` (XML text or botocore's datetime) as epoch seconds (ms)."""
    if isinstance(when, datetime):
        return round(when.timestamp(), 3)
    try:
        t = datetime.fromisoformat(when.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return round(t.timestamp(), 3)


def _ordered(skipped: dict[str, dict]) -> list[str]:
    """Skipped resources, each after the skipped ones it refers to (``DependsOn`` too)."""
    deps = {}
    for lid, res in skipped.items():
        depends = res.get("DependsOn") or []
        depends = [depends] if isinstance(depends, str) else depends
        deps[lid] = (_refs(res.get("Properties")) | set(depends)) & set(skipped) - {lid}
    out: list[str] = []
    while deps:
        ready = sorted(lid for lid, d in deps.items() if not d - set(out))
        if not ready:   # a cycle: CloudFormation refuses it; make them in any order
            ready = sorted(deps)
        for lid in ready:
            out.append(lid)
            deps.pop(lid)
    return out


def _apply_ignored(resolver: _Resolver, lid: str, res: dict, physical: str) -> None:
    """Properties of resources moto makes that its model may not apply (checked, applied when
    missing)."""
    props = res.get("Properties") or {}
    if res.get("Type") == "AWS::Lambda::Function" and "ReservedConcurrentExecutions" in props:
        want = resolver.resolve(props["ReservedConcurrentExecutions"])
        if want is _NO_VALUE:
            return
        want = int(want)
        lam = resolver.client("lambda")
        have = lam.get_function_concurrency(FunctionName=physical).get(
            "ReservedConcurrentExecutions")
        if have != want:
            lam.put_function_concurrency(FunctionName=physical,
                                         ReservedConcurrentExecutions=want)
    if res.get("Type") == "AWS::S3::Bucket" and "LifecycleConfiguration" in props:
        _put_bucket_lifecycle(resolver, physical, resolver.resolve(props["LifecycleConfiguration"]))


#: The properties of an AWS::S3::Bucket lifecycle Rule the emulator translates.
_LIFECYCLE_RULE_PROPS = frozenset({"Id", "Status", "Prefix", "ExpirationInDays"})


def _put_bucket_lifecycle(resolver: _Resolver, bucket: str, config: dict) -> None:
    """A bucket's ``LifecycleConfiguration``, which moto's bucket model ignores, applied with S3
    PutBucketLifecycleConfiguration: CloudFormation's Rule ``Id``, ``Status``, ``Prefix``,
    ``ExpirationInDays`` are the API's ``ID``, ``Status``, ``Filter.Prefix``,
    ``Expiration.Days`` (docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/
    aws-properties-s3-bucket-rule.html).  Any other rule property fails the stack
    (:class:`Unresolvable`) rather than being dropped."""
    rules = []
    for rule in config.get("Rules") or []:
        unknown = sorted(set(rule) - _LIFECYCLE_RULE_PROPS)
        if unknown:
            raise Unresolvable(f"lifecycle rule properties not emulated: {', '.join(unknown)}")
        api: dict = {"Status": rule["Status"], "Filter": {"Prefix": rule.get("Prefix", "")}}
        if "Id" in rule:
            api["ID"] = rule["Id"]
        if "ExpirationInDays" in rule:
            api["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
        rules.append(api)
    if rules:
        resolver.client("s3").put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": rules})
