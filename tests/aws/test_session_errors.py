"""Clients (session.py) and the botocore -> taxonomy mapping (errors.py), over real HTTP."""

from __future__ import annotations

import threading

import pytest

from condor_annex.config import AwsSettings
from condor_annex.errors import (AuthError, CapacityError, InvalidRequestError, NotFoundError,
                                 ProviderError, QuotaError, ThrottledError)
from condor_annex.providers.aws.errors import aws_errors, classify
from condor_annex.providers.aws.session import (add_call_listener, make_client,
                                                remove_call_listener)


@pytest.mark.parametrize("code, cls, retryable", [
    ("InsufficientInstanceCapacity", CapacityError, False),
    ("InsufficientCapacity", CapacityError, False),
    ("SpotMaxPriceTooLow", CapacityError, False),
    ("VcpuLimitExceeded", QuotaError, False),
    ("InstanceLimitExceeded", QuotaError, False),
    ("MaxSpotInstanceCountExceeded", QuotaError, False),
    ("RequestLimitExceeded", ThrottledError, True),
    ("Throttling", ThrottledError, True),
    ("ThrottlingException", ThrottledError, True),
    ("TooManyRequestsException", ThrottledError, True),
    ("AuthFailure", AuthError, False),
    ("UnauthorizedOperation", AuthError, False),
    ("AccessDenied", AuthError, False),
    ("AccessDeniedException", AuthError, False),
    ("InvalidClientTokenId", AuthError, False),
    ("ExpiredToken", AuthError, False),
    ("InvalidInstanceID.NotFound", NotFoundError, False),
    ("NoSuchKey", NotFoundError, False),
    ("NoSuchBucket", NotFoundError, False),
    ("ResourceNotFoundException", NotFoundError, False),
    ("InternalError", ProviderError, True),
    ("ServiceUnavailable", ProviderError, True),
    ("InvalidParameterValue", InvalidRequestError, False),
], ids=lambda v: v if isinstance(v, str) else None)
def test_classify(code, cls, retryable):
    assert classify(code) == (cls, retryable)


def test_unknown_5xx_code_is_retryable():
    assert classify("SomethingOdd", 503) == (ProviderError, True)


def test_server_side_invalid_parameter(aws):
    ec2 = make_client(aws, "ec2")

    with pytest.raises(InvalidRequestError) as err:
        with aws_errors("ec2.RunInstances"):
            ec2.run_instances(ImageId="ami-03cf127a", MinCount=1, MaxCount=1,
                              Placement={"AvailabilityZone": "us-east-1zz"})
    assert str(err.value).startswith("ec2.RunInstances: InvalidParameterValue: ")
    assert err.value.code == "InvalidParameterValue"
    assert err.value.request_id
    assert not err.value.retryable


def test_not_found_from_s3(aws):
    with pytest.raises(NotFoundError, match=r"^s3.GetObject: NoSuchBucket: "):
        with aws_errors("s3.GetObject"):
            make_client(aws, "s3").get_object(Bucket="no-such-bucket", Key="k")


def test_moto_not_implemented_is_named(aws):
    # moto answers an operation it lacks with HTTP 500 and an HTML page.
    ec2 = make_client(aws, "ec2", fast_fail=True)

    with pytest.raises(ProviderError) as err:
        with aws_errors("ec2.DescribeCapacityReservationFleets"):
            ec2.describe_capacity_reservation_fleets()
    assert type(err.value) is ProviderError
    assert "does not implement the operation" in str(err.value)
    assert str(err.value).startswith("ec2.DescribeCapacityReservationFleets: NotImplemented")


def test_unreachable_endpoint_is_retryable(aws):
    with pytest.raises(ProviderError) as err:
        with aws_errors("ec2.DescribeInstances"):
            make_client(_dead_endpoint(aws), "ec2", fast_fail=True).describe_instances()
    assert err.value.retryable
    assert "cannot reach the endpoint" in str(err.value)


def test_no_credentials_is_auth_error(moto_endpoint, monkeypatch):
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var)
    import condor_annex.providers.aws.session as session

    monkeypatch.setattr(session, "_local", threading.local())  # a fresh Session sees no keys
    settings = AwsSettings(endpoint_url=moto_endpoint)

    with pytest.raises(AuthError, match="no usable AWS credentials"):
        with aws_errors("ec2.DescribeInstances"):
            make_client(settings, "ec2").describe_instances()


def test_other_exceptions_pass_through():
    with pytest.raises(KeyError):
        with aws_errors("ec2.RunInstances"):
            raise KeyError("ours")


def test_aws_errors_as_decorator(aws):
    @aws_errors("s3.HeadObject")
    def head():
        make_client(aws, "s3").head_object(Bucket="no-such-bucket", Key="k")

    with pytest.raises(NotFoundError, match="^s3.HeadObject: 404"):
        head()


def test_call_listener_counts_every_call(aws):
    calls: list[str] = []
    add_call_listener(calls.append)
    try:
        make_client(aws, "ec2").describe_instances()
        make_client(aws, "s3").list_buckets()
    finally:
        remove_call_listener(calls.append)
    make_client(aws, "ec2").describe_instances()

    assert calls == ["ec2.DescribeInstances", "s3.ListBuckets"]
    remove_call_listener(calls.append)  # removing twice is fine


def test_client_uses_settings(aws):
    client = make_client(aws, "ec2")

    assert client.meta.region_name == "us-east-1"
    assert client.meta.endpoint_url == aws.endpoint_url
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": 10}


def _dead_endpoint(aws):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return AwsSettings(region=aws.region, endpoint_url=f"http://127.0.0.1:{port}",
                       access_key_file=aws.access_key_file, secret_key_file=aws.secret_key_file)


def test_fast_fail_client_sends_once(aws):
    # Connection errors are retried by botocore; a fast-fail client still sends only once.
    client = make_client(_dead_endpoint(aws), "ec2", fast_fail=True)
    sends: list[str] = []
    client.meta.events.register("before-send.ec2.*", lambda **kw: sends.append("sent"))

    with pytest.raises(ProviderError):
        with aws_errors("ec2.RunInstances"):
            client.run_instances(ImageId="ami-03cf127a", MinCount=1, MaxCount=1)
    assert sends == ["sent"]


def test_sessions_are_per_thread(aws):
    from condor_annex.providers.aws import session

    mine = session._session()
    theirs = []
    t = threading.Thread(target=lambda: theirs.append(session._session()))
    t.start()
    t.join()

    assert session._session() is mine
    assert theirs[0] is not mine


def test_bad_secret_file_mode_is_refused(aws):
    import os

    from condor_annex.errors import BadInputError

    os.chmod(aws.secret_key_file, 0o644)
    with pytest.raises(BadInputError, match="chmod 600"):
        make_client(aws, "ec2")


class _Unavailable:
    """An HTTP endpoint on loopback that answers every request with EC2's 503 Unavailable and
    records when each request arrived."""

    BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>Unavailable'
            b'</Code><Message>try later</Message></Error></Errors><RequestID>r</RequestID>'
            b'</Response>')

    def __init__(self):
        import http.server
        import time
        arrivals = self.arrivals = []
        body = self.BODY

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                arrivals.append(time.monotonic())
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(503)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_regression_retries_wait_between_attempts(aws, monkeypatch):
    # The original retried each step three times with no delay (reference §5).  Ours: ten
    # attempts in all, with botocore's exponential backoff between them.
    import botocore.endpoint
    from condor_annex.providers.aws.session import MAX_ATTEMPTS
    endpoint = _Unavailable()
    slept = []
    monkeypatch.setattr(botocore.endpoint.time, "sleep", slept.append)   # record, don't wait
    settings = AwsSettings(region=aws.region, endpoint_url=endpoint.url,
                           access_key_file=aws.access_key_file,
                           secret_key_file=aws.secret_key_file)
    try:
        with pytest.raises(ProviderError) as err:
            with aws_errors("ec2.DescribeInstances"):
                make_client(settings, "ec2").describe_instances()
    finally:
        endpoint.server.shutdown()
    assert err.value.retryable and "Unavailable" in str(err.value)
    assert MAX_ATTEMPTS == 10 and len(endpoint.arrivals) == MAX_ATTEMPTS
    assert len(slept) == MAX_ATTEMPTS - 1
    assert all(d > 0 for d in slept), slept
    # Full jitter: attempt n waits up to 2**n seconds (at most 20 s).
    assert all(d <= min(2 ** n, 20) for n, d in enumerate(slept)), slept
