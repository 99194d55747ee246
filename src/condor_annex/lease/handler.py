"""condor-annex lease enforcer (Lambda index.py). Ends an annex at its lease end or when its
last instance ended. Members: EXACT tag."""
import json
import os
import time

TAG = "htcondor:AnnexName"
LIVE = ["pending", "running", "stopping", "stopped"]


def _get(c, k):
    return c[k] if type(c) is dict else getattr(c, k)


def _ours(tags, name):
    return any(t["Key"] == TAG and t["Value"] == name for t in tags or ())


def _pages(c, op, key, **kw):
    for p in c.get_paginator(op).paginate(**kw):
        yield from p.get(key, [])


def _each(fn, arg, ids, n, **kw):
    for i in range(0, len(ids), n):
        fn(**{arg: ids[i:i + n]}, **kw)
    return len(ids)


def _alive(ec2, name):
    f = [{"Name": "tag:" + TAG, "Values": [name]}, {"Name": "instance-state-name", "Values": LIVE}]
    return [i["InstanceId"] for r in _pages(ec2, "describe_instances", "Reservations", Filters=f)
            for i in r["Instances"] if _ours(i.get("Tags"), name)]


def _sfrs(ec2, name):
    return [f["SpotFleetRequestId"]
            for f in _pages(ec2, "describe_spot_fleet_requests", "SpotFleetRequestConfigs")
            if not f.get("SpotFleetRequestState", "").startswith("cancelled")
            and _ours(f.get("Tags"), name)]


def _fleets(ec2, name):
    return [f["FleetId"] for f in _pages(ec2, "describe_fleets", "Fleets")
            if not f.get("FleetState", "").startswith("deleted") and _ours(f.get("Tags"), name)]


def _drop_template(ec2, name):
    t = ec2.describe_launch_templates(Filters=[{"Name": "launch-template-name",
                                                "Values": ["annex-" + name]}])
    for x in t["LaunchTemplates"]:
        ec2.delete_launch_template(LaunchTemplateId=x["LaunchTemplateId"])
    return len(t["LaunchTemplates"])


def _unschedule(sch, e):
    try:
        sch.delete_schedule(Name=e["ScheduleName"], GroupName=e["ScheduleGroup"])
    except Exception as x:
        if getattr(x, "response", {}).get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
    return True


def enforce(event, clients, now=None):
    """End the annex if the lease expired, or Trigger=instance-ended and none is alive.
    event: AnnexName S3BucketName BundleKey LeaseExpiration(epoch s) ScheduleName
    ScheduleGroup [Trigger]; clients: ec2 s3 scheduler; now: epoch s."""
    e = event
    name, ec2 = e["AnnexName"], _get(clients, "ec2")
    out = {"AnnexName": name, "LeaseExpiration": e["LeaseExpiration"], "Unsupported": []}
    if (time.time() if now is None else now) < float(e["LeaseExpiration"]) and (
            e.get("Trigger") != "instance-ended" or _alive(ec2, name)):
        return dict(out, Status="not-due")
    errors = []

    def step(key, fn):
        try:
            out[key] = fn()
        except Exception as x:
            if "<html" in str(x):  # emulator lacks the call
                out["Unsupported"].append(key)
            else:
                errors.append(f"{key}: {type(x).__name__}: {x}")

    step("BundleDeleted", lambda: bool(_get(clients, "s3").delete_object(
        Bucket=e["S3BucketName"], Key=e["BundleKey"])))
    step("Terminated", lambda: _each(ec2.terminate_instances, "InstanceIds",
                                     _alive(ec2, name), 1000))
    step("SpotFleetsCancelled", lambda: _each(ec2.cancel_spot_fleet_requests,
         "SpotFleetRequestIds", _sfrs(ec2, name), 100, TerminateInstances=True))
    step("FleetsDeleted", lambda: _each(ec2.delete_fleets, "FleetIds", _fleets(ec2, name), 25,
                                        TerminateInstances=True))
    step("TemplateDeleted", lambda: _drop_template(ec2, name))
    if not errors:
        step("ScheduleDeleted", lambda: _unschedule(_get(clients, "scheduler"), e))
    if errors:
        raise RuntimeError(f"lease of {name}: " + "; ".join(errors))
    return dict(out, Status="ended")


def instance_ended(iid, c):
    """An instance ended: end its annex if none is alive."""
    rs = _get(c, "ec2").describe_instances(InstanceIds=[iid])["Reservations"]
    n = [t["Value"] for r in rs for i in r["Instances"] for t in i.get("Tags", [])
         if t["Key"] == TAG]
    try:
        s = _get(c, "scheduler").get_schedule(Name="annex-lease-" + n[0])
    except Exception:
        return {"Status": "no-lease"}
    return enforce(dict(json.loads(s["Target"]["Input"]), Trigger="instance-ended"), c)


def handler(event, context):
    """Lambda entry: lease event or EC2 state-change event."""
    import boto3

    r = os.environ.get("AWS_REGION")
    c = {k: boto3.client(k, region_name=r) for k in ("ec2", "s3", "scheduler")}
    d = event.get("detail")
    out = instance_ended(d["instance-id"], c) if d else enforce(event, c)
    print(out)
    return out
