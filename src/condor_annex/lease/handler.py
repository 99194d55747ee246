"""condor-annex lease function (inlined as the Lambda's index.py; stdlib + boto3 only).

handler() dispatches: a lease schedule's event -> enforce(): end the annex at its lease end;
the rate(5 minutes) sweep ({"Sweep": true}) -> sweep(): end annexes whose htcondor:LeaseEnd
passed (even with no schedule) or whose htcondor:Budget is spent; EC2's "terminated" rule (an
event with "detail") -> instance_ended(): end an annex once its last instance ended;
check-setup --preflight ({"Probe": {"Host": h, "Port": p}}) -> probe(): collector reachable?
Annexes are found by the exact tag htcondor:AnnexName.  Ending: instances, fleets, launch
template, bundle, the annex's role and profile (IAM path /condor-annex/annex/), the schedule
last, so a failed attempt leaves the schedule (and Lambda's retries) to try again.
"""
import json
import os
import socket
import time

ANNEX_TAG = "htcondor:AnnexName"
LEASE_END_TAG = "htcondor:LeaseEnd"
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
BUDGET_TAG = "htcondor:Budget"  # "<USD> <type>=<USD/h> ..." (create)
SWEEP_S = 300  # the sweep's rate(5 minutes)
# Scheduler fires a one-time schedule at any second of its minute: a lease event may come
# 59 s early; enforce() waits that out (Timeout 300 s).
MAX_WAIT_S = 70


class NotDue(Exception):
    """A lease event came over MAX_WAIT_S early: Lambda's async retries (+1, +2 min) and
    the sweep come back."""


def client(clients, name):
    """clients["ec2"] or clients.ec2."""
    return clients[name] if isinstance(clients, dict) else getattr(clients, name)


def clock(now):
    return time.time() if now is None else now


def tag(tags, key):
    """The value of tag `key` in an EC2 Tags list, or None."""
    return next((t["Value"] for t in tags or () if t["Key"] == key), None)


def pages(ec2, operation, key, **params):
    for page in ec2.get_paginator(operation).paginate(**params):
        yield from page.get(key, [])


def error_code(error):
    return getattr(error, "response", {}).get("Error", {}).get("Code")


def lease_event(name, bucket, lease_end):
    """The lease event of annex `name`, as its schedule carries it."""
    return {"AnnexName": name, "S3BucketName": bucket, "BundleKey": "config-%s.tar.gz" % name,
            "LeaseExpiration": int(lease_end), "ScheduleName": "annex-lease-" + name,
            "ScheduleGroup": "default"}


# --- finding an annex's resources

def live_instances(ec2, name):
    """Ids of the annex's instances that are not shutting down or terminated."""
    filters = [{"Name": "tag:" + ANNEX_TAG, "Values": [name]},
               {"Name": "instance-state-name", "Values": LIVE_STATES}]
    return [i["InstanceId"] for r in pages(ec2, "describe_instances", "Reservations",
                                           Filters=filters)
            for i in r["Instances"] if tag(i.get("Tags"), ANNEX_TAG) == name]


def spot_fleet_requests(ec2):
    """Spot Fleet requests not cancelled (DescribeSpotFleetRequests has no tag filter)."""
    return [f for f in pages(ec2, "describe_spot_fleet_requests", "SpotFleetRequestConfigs")
            if not f.get("SpotFleetRequestState", "").startswith("cancelled")]


def ec2_fleets(ec2):
    """EC2 Fleets not deleted (DescribeFleets has no tag filter)."""
    return [f for f in pages(ec2, "describe_fleets", "Fleets")
            if not f.get("FleetState", "").startswith("deleted")]


# --- ending an annex

def in_chunks(call, param, ids, size, **params):
    for i in range(0, len(ids), size):
        call(**{param: ids[i:i + size]}, **params)
    return len(ids)


def delete_launch_template(ec2, name):
    found = ec2.describe_launch_templates(
        Filters=[{"Name": "launch-template-name", "Values": ["annex-" + name]}])
    for template in found["LaunchTemplates"]:
        ec2.delete_launch_template(LaunchTemplateId=template["LaunchTemplateId"])
    return len(found["LaunchTemplates"])


ROLE_PREFIX = "condor-annex-"
ROLE_POLICY = "condor-annex-bundle"


def delete_annex_role(iam, name):
    """Delete the annex's instance profile and role condor-annex-<name> (NoSuchEntity at any
    step is fine).  Returns the number of steps that deleted something."""
    role = ROLE_PREFIX + name
    done = 0
    for call, params in (
            (iam.remove_role_from_instance_profile,
             {"InstanceProfileName": role, "RoleName": role}),
            (iam.delete_instance_profile, {"InstanceProfileName": role}),
            (iam.delete_role_policy, {"RoleName": role, "PolicyName": ROLE_POLICY}),
            (iam.delete_role, {"RoleName": role})):
        try:
            call(**params)
            done += 1
        except Exception as e:
            if error_code(e) != "NoSuchEntity":
                raise
    return done


def delete_schedule(scheduler, event):
    try:
        scheduler.delete_schedule(Name=event["ScheduleName"], GroupName=event["ScheduleGroup"])
    except Exception as e:
        if error_code(e) != "ResourceNotFoundException":
            raise
    return True


def end_annex(event, clients):
    """End the annex of a lease event: every step runs even when another fails, the schedule
    only when all succeeded.  Returns counts per step; RuntimeError names failed steps."""
    name, ec2 = event["AnnexName"], client(clients, "ec2")
    out = {"AnnexName": name, "LeaseExpiration": event["LeaseExpiration"]}
    errors = []

    def step(key, action):
        try:
            out[key] = action()
        except Exception as e:
            errors.append("%s: %s: %s" % (key, type(e).__name__, e))

    def ours(fleet):
        return tag(fleet.get("Tags"), ANNEX_TAG) == name

    step("Terminated", lambda: in_chunks(ec2.terminate_instances, "InstanceIds",
                                         live_instances(ec2, name), 1000))
    step("SpotFleetsCancelled", lambda: in_chunks(
        ec2.cancel_spot_fleet_requests, "SpotFleetRequestIds",
        [f["SpotFleetRequestId"] for f in spot_fleet_requests(ec2) if ours(f)], 100,
        TerminateInstances=True))
    step("FleetsDeleted", lambda: in_chunks(
        ec2.delete_fleets, "FleetIds", [f["FleetId"] for f in ec2_fleets(ec2) if ours(f)], 25,
        TerminateInstances=True))
    step("TemplateDeleted", lambda: delete_launch_template(ec2, name))
    step("BundleDeleted", lambda: bool(client(clients, "s3").delete_object(
        Bucket=event["S3BucketName"], Key=event["BundleKey"])))
    # After the instances: nothing of the annex uses the role any more.
    step("RoleDeleted", lambda: delete_annex_role(client(clients, "iam"), name))
    if not errors:
        step("ScheduleDeleted", lambda: delete_schedule(client(clients, "scheduler"), event))
    if errors:
        raise RuntimeError("lease of %s: %s" % (name, "; ".join(errors)))
    out["Status"] = "ended"
    return out


# --- the three callers

def enforce(event, clients, now=None, sleep=time.sleep):
    """Lease event (lease_event()): end the annex at LeaseExpiration (epoch s), never
    before: up to MAX_WAIT_S early it sleeps (then ends nothing if an extend moved the
    schedule), earlier it raises NotDue.  now: epoch s (default time.time())."""
    lease_end = float(event["LeaseExpiration"])
    left = lease_end - clock(now)
    if left > MAX_WAIT_S:
        raise NotDue("lease of %s ends in %.0f s: not due" % (event["AnnexName"], left))
    waited = left > 0
    while left > 0:
        sleep(left)
        now = None if now is None else now + left
        left = lease_end - clock(now)
    if waited:  # an extend while we waited moved the schedule: that lease is not over
        scheduled = scheduled_lease(clients, event["AnnexName"])
        if scheduled and float(scheduled["LeaseExpiration"]) > clock(now):
            return {"Status": "extended", "LeaseExpiration": scheduled["LeaseExpiration"]}
    return end_annex(event, clients)


def ended_at(i, now):
    """UTC epoch in a StateTransitionReason ("User initiated (2026-03-01 12:00:00 GMT)"),
    else now."""
    try:
        y, m, d, H, M, S = map(int, i["StateTransitionReason"].split("(")[1].replace(
            "-", " ").replace(":", " ").split()[:6])
    except (KeyError, IndexError, ValueError):
        return now
    y -= m < 3  # days from civil (H. Hinnant)
    return min(now, (365 * y + y // 4 - y // 100 + y // 400 + d - 719469 + (
        153 * (m + (9 if m < 3 else -3)) + 2) // 5) * 86400 + H * 3600 + M * 60 + S)


def over_budget(instances, now):
    """Annexes whose spend reaches their largest BUDGET_TAG budget: each instance's time,
    LaunchTime to now + SWEEP_S + 60 s (live) or to its end (60 s at least), x its type's
    price there (else the dearest); ended ones' at least the tag's spent= (annexd's record of
    those EC2 no longer lists)."""
    spent, cap, done, kept = {}, {}, {}, {}
    for i in instances:
        name, value = tag(i.get("Tags"), ANNEX_TAG), tag(i.get("Tags"), BUDGET_TAG)
        try:
            usd, *prices = value.split()
            known = {t: float(p) for t, p in (x.split("=") for x in prices)}
            kept[name] = max(kept.get(name, 0), known.pop("spent", 0))
            price = known.get(i["InstanceType"]) or max(known.values())
            cap[name] = max(cap.get(name, 0), float(usd))
        except (AttributeError, ValueError):
            continue
        start, live = i["LaunchTime"].timestamp(), i["State"]["Name"] in LIVE_STATES
        end = now if live or i["State"]["Name"] != "terminated" else ended_at(i, now)
        use = spent if live else done
        use[name] = use.get(name, 0) + price * max(
            end - start + (SWEEP_S + 60) * live, 60) / 3600.0
    return {n for n in cap if spent.get(n, 0) + max(done.get(n, 0), kept[n]) >= cap[n]}


def sweep(event, clients, now=None):
    """Sweep event {"Sweep": true, "S3BucketName": bucket}: end every annex over budget, or
    whose largest htcondor:LeaseEnd (live instances, fleets) passed unless its schedule was
    extended.  Returns {"Status": "swept", "Ended": [names]}; RuntimeError after trying all
    when one could not be ended."""
    ec2, now = client(clients, "ec2"), clock(now)
    lease_ends = {}
    listed = [i for r in pages(ec2, "describe_instances", "Reservations", Filters=[
        {"Name": "tag-key", "Values": [LEASE_END_TAG]}]) for i in r["Instances"]]
    tagged = [i for i in listed if i["State"]["Name"] in LIVE_STATES]
    for resource in tagged + spot_fleet_requests(ec2) + ec2_fleets(ec2):
        name = tag(resource.get("Tags"), ANNEX_TAG)
        end = tag(resource.get("Tags"), LEASE_END_TAG)
        if name and end and end.isdigit():
            lease_ends[name] = max(lease_ends.get(name, 0), int(end))
    ended, errors, over = [], [], over_budget(listed, now)
    for name, lease_end in sorted(lease_ends.items()):
        if lease_end > now and name not in over:
            continue
        lease = lease_event(name, event["S3BucketName"], lease_end)
        scheduled = scheduled_lease(clients, name)
        if scheduled and float(scheduled["LeaseExpiration"]) > now and name not in over:
            continue  # extended: the tags are behind the schedule
        try:
            end_annex(dict(lease, **(scheduled or {})), clients)
            ended.append(name)
        except Exception as e:
            errors.append(str(e))
    if errors:
        raise RuntimeError("lease sweep: " + "; ".join(errors))
    return {"Status": "swept", "Ended": ended}


def scheduled_lease(clients, name):
    """The lease event in the annex's schedule, or None when it has no schedule."""
    try:
        found = client(clients, "scheduler").get_schedule(Name="annex-lease-" + name)
    except Exception as e:
        if error_code(e) == "ResourceNotFoundException":
            return None
        raise
    return json.loads(found["Target"]["Input"])


def instance_ended(instance_id, clients):
    """An instance terminated: end its annex early if none of its instances is alive."""
    ec2 = client(clients, "ec2")
    found = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    tags = [t for r in found for i in r["Instances"] for t in i.get("Tags", [])]
    name = tag(tags, ANNEX_TAG)
    if not name:
        return {"Status": "not-annex", "InstanceId": instance_id}
    if live_instances(ec2, name):
        return {"Status": "annex-alive", "AnnexName": name}
    lease = scheduled_lease(clients, name)
    if lease is None:  # already ended (or never leased): the sweep covers what remains
        return {"Status": "no-lease", "AnnexName": name}
    return end_annex(lease, clients)


PROBE_TIMEOUT_S = 5


def probe(target, timeout_s=PROBE_TIMEOUT_S):
    """Probe event {"Probe": {"Host": h, "Port": p}}: a TCP connection to h:p within
    timeout_s (h may be "<host:9618?sock=collector>").  Returns {"Status": "OK", "Address":
    "h:p", "Seconds": s} or {"Status": "error", ...}."""
    host, port = str(target.get("Host", "")), target.get("Port")
    if port is None:
        address = host.strip("<>").split("?", 1)[0]
        if address.startswith("["):
            host, _, rest = address[1:].partition("]")
            port = rest.lstrip(":") or 9618
        else:
            host, _, port = address.rpartition(":") if ":" in address else (address, "", 9618)
    address = "%s:%s" % (host, port)
    started = time.time()
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as e:
        return {"Status": "error", "Address": address,
                "Error": "%s: %s" % (type(e).__name__, e)}
    return {"Status": "OK", "Address": address, "Seconds": round(time.time() - started, 3)}


def handler(event, context):
    """Lambda entry point: EC2 state-change event, sweep event, or lease event."""
    if "Probe" in event:   # needs no AWS client
        out = probe(event["Probe"])
        print(json.dumps(out))
        return out
    import boto3

    region = os.environ.get("AWS_REGION")
    clients = {k: boto3.client(k, region_name=region)
               for k in ("ec2", "s3", "scheduler", "iam")}
    if "detail" in event:
        out = instance_ended(event["detail"]["instance-id"], clients)
    elif event.get("Sweep"):
        out = sweep(event, clients)
    else:
        out = enforce(event, clients)
    print(json.dumps(out))
    return out
