"""The server-side lease enforcer.

:mod:`condor_annex.lease.handler` is deployed alone, as the Lambda function's ``index.py``
(inlined into the setup template), and is also run in-process by the local cloud against its
emulator.  It imports only the standard library and boto3, and this package imports nothing.
"""
