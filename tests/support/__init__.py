"""What the tests share; no test module imports another test module, only these.

::

    budget.py        how hard property tests try: thorough in CI (RESTREAM_THOROUGH=1), a
                     tenth at a prompt; ``examples(n)`` and ``size(thorough, quick)``
    broker.py        fixtures: the session broker, ``new_topic``, ``producer``,
                     ``read_range`` (a pytest plugin, registered in tests/conftest.py)
    executors.py     the ``executor`` fixture: every executor in turn (a pytest plugin,
                     registered in tests/conftest.py)
    procs.py         what /proc says about processes a test started
    checkpoints.py   engine checkpoint helpers: epoch sinks, resuming from a position
    engine_logs.py   hypothesis strategies for logs and pipelines the executors must agree on,
                     and families of sliding tables that share one history
    partition_logs.py  generated partitioned logs and sources for the merge and checkpoints
    slow_runs.py     a long log and a fragile pipeline for the parallel executor's lifecycle
                     tests (and the scripts they run in a fresh interpreter)
    social.py        hand-built social data sets for the social example's tests
    crash_data.py    the crash tests' input (bad records throughout) and pipeline (two
                     records per message in one partition)
    fake_kafka.py    a fake consumer over in-memory partitions, for resume points and
                     output checks without a broker
    deploy.py        the chart, manifests and image under test, and the real CLI and config
                     loader they are checked against
"""
