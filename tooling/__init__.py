"""restream's tooling: the embedded broker, the data generator, the demo and the benches.

Not part of the service: a job (``restream run``, ``restream positions``) never imports it; the
``restream`` command runs it for ``demo``, ``bench e2e|checkpoint``, ``generate`` and
``broker``, and the tests use it for their broker and data::

    tansu.py             the embedded Tansu broker process (memory storage, loopback port)
    broker.py            LocalBroker: an external cluster, testcontainers or Tansu, resolved
                         as DESIGN.md section 6 says; ``restream broker``
    generate.py          write_social: the social data set to Kafka, keyed like the Java
                         client; ``restream generate social``
    dataset.py           the data set on a broker, as the demo and the benches use it
    demo.py              ``restream demo``: a real backtest on an embedded broker
    bench_e2e.py         ``restream bench e2e``: Kafka -> engine -> Kafka against its ceilings
    bench_checkpoint.py  ``restream bench checkpoint``: what crash safety costs
    serde_bench.py       ``python -m tooling.serde_bench``: bulk decoding against fastavro

The facade re-exports what the tests and scripts use; the commands import their own modules.
"""

from __future__ import annotations

from tooling.broker import LocalBroker, local_broker
from tooling.dataset import SocialTopics, broker_for, unique_prefix, write_social_topics
from tooling.generate import WriteReport, write_social

__all__ = [
    "LocalBroker",
    "SocialTopics",
    "WriteReport",
    "broker_for",
    "local_broker",
    "unique_prefix",
    "write_social",
    "write_social_topics",
]
