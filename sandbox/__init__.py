"""The sandbox: a fake mParticle Events API over real HTTP, a test double beside the product, not part of it.

    server.py    the fake Events API (`Sandbox`, `FaultConfig`) and its inspection API
    checks.py    its per-batch validation, written from mParticle's documentation
    keys.py      its limits and counts per API key
    cli.py       its command line: `python -m sandbox` and `manage.py sandbox_api`
    pace_sim.py  senders pacing themselves against a model of a limit, in simulated time (tests, benchmarks)

Tests, benchmarks and the local site's `manage.py serve` and `sandbox_api` use it; nothing else in the product
imports it. No Django imports.
"""
