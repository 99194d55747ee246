"""condor-annex lease enforcer: ends an annex whose lease has expired.

Deployed alone as the Lambda's index.py (stdlib + boto3). Scheduler calls it at the lease's end.
Members are found by the EXACT tag htcondor:AnnexName. Every step runs; the schedule is deleted
only if all succeeded, else we raise so Scheduler retries.
"""
import os
import time

TAG = "htcondor:AnnexName"


def _get(c, k):
    return c[k] if isinstance(c, dict) else getattr(c, k)


def _ours(tags, name):
    return any(t["Key"] == TAG and t["Value"] == name for t in tags or ())


def _pages(c, op, key, **kw):
    for p in c.get_paginator(op).paginate(**kw):
        yield from p.get(key, [])


def _each(fn, arg, ids, n, **kw):
    for i in range(0, len(ids), n):
        fn(**{arg: ids[i:i + n]}, **kw)
    return len(ids)


def _terminate(ec2, name):
    f = [{"Name": "tag:" + TAG, "Values": [name]},
         {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
    ids = [i["InstanceId"] for r in _pages(ec2, "describe_instances", "Reservations", Filters=f)
           for i in r["Instances"] if _ours(i.get("Tags"), name)]
    return _each(ec2.terminate_instances, "InstanceIds", ids, 1000)


def _cancel_sfrs(ec2, name):
    ids = [f["SpotFleetRequestId"]
           for f in _pages(ec2, "describe_spot_fleet_requests", "SpotFleetRequestConfigs")
           if not f.get("SpotFleetRequestState", "").startswith("cancelled")
           and (_ours(f.get("Tags"), name) or f.get("SpotFleetRequestConfig", {})
                .get("ClientToken", "").startswith(name + "_"))]
    return _each(ec2.cancel_spot_fleet_requests, "SpotFleetRequestIds", ids, 100,
                 TerminateInstances=True)


def _delete_fleets(ec2, name):
    ids = [f["FleetId"] for f in _pages(ec2, "describe_fleets", "Fleets")
           if not f.get("FleetState", "").startswith("deleted") and _ours(f.get("Tags"), name)]
    return _each(ec2.delete_fleets, "FleetIds", ids, 25, TerminateInstances=True)


def _delete_schedule(sch, event):
    try:
        sch.delete_schedule(Name=event["ScheduleName"], GroupName=event["ScheduleGroup"])
    except Exception as e:
        if getattr(e, "response", {}).get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
    return True


def enforce(event, clients, now=None):
    """End the annex if its lease expired. event: {AnnexName, S3BucketName, BundleKey,
    LeaseExpiration (epoch s), ScheduleName, ScheduleGroup}; clients: ec2, s3, scheduler
    (dict or attributes); now: epoch s. Returns counts."""
    name = event["AnnexName"]
    out = {"AnnexName": name, "LeaseExpiration": event["LeaseExpiration"]}
    if (time.time() if now is None else now) < float(event["LeaseExpiration"]):
        return dict(out, Status="not-due")
    ec2, errors, out["Unsupported"] = _get(clients, "ec2"), [], []

    def step(key, fn):
        try:
            out[key] = fn()
        except Exception as e:
            if "<html" in str(e):  # emulator lacks the call (moto: HTTP 500, HTML body)
                out["Unsupported"].append(key)
            else:
                errors.append(f"{key}: {type(e).__name__}: {e}")

    step("BundleDeleted", lambda: bool(_get(clients, "s3").delete_object(
        Bucket=event["S3BucketName"], Key=event["BundleKey"])))
    step("Terminated", lambda: _terminate(ec2, name))
    step("SpotFleetsCancelled", lambda: _cancel_sfrs(ec2, name))
    step("FleetsDeleted", lambda: _delete_fleets(ec2, name))
    if not errors:
        step("ScheduleDeleted", lambda: _delete_schedule(_get(clients, "scheduler"), event))
    if errors:
        raise RuntimeError(f"lease of {name}: " + "; ".join(errors))
    return dict(out, Status="ended")


def handler(event, context):
    """Lambda entry point: default boto3 clients in $AWS_REGION."""
    import boto3

    r = os.environ.get("AWS_REGION")
    out = enforce(event, {k: boto3.client(k, region_name=r) for k in ("ec2", "s3", "scheduler")})
    print(out)
    return out
