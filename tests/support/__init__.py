"""What the tests share; no test module imports another test module, only these.

::

    budget.py        how hard property tests try: thorough in CI (RESTREAM_THOROUGH=1), a
                     tenth at a prompt; ``examples(n)`` and ``size(thorough, quick)``
    broker.py        fixtures: the session broker, ``new_topic``, ``producer``,
                     ``read_range`` (a pytest plugin, registered in tests/conftest.py)
    procs.py         what /proc says about processes a test started
    checkpoints.py   engine checkpoint helpers: epoch sinks, resuming from a position
    engine_logs.py   hypothesis strategies for logs and pipelines the executors must agree on
    deploy.py        the chart, manifests and image under test, and the real CLI and config
                     loader they are checked against
"""
