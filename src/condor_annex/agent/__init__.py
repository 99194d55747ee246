"""Instance-side bootstrap agent (runs on the annex instance, not on the user's machine).

It runs under the image's own Python (3.11-3.13) with only the standard library and boto3, so it
imports nothing from ``condor_annex`` outside this package. Entry point:
``python3 -m condor_annex.agent`` (see :mod:`condor_annex.agent.bootstrap`).
"""
