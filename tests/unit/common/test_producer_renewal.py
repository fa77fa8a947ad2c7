"""Replacing a producer left out of sequence by a long broker outage (ProducerRenewal).

A fake broker config stands in for FastStream's: it counts connects and disconnects and can
refuse to connect a few times, as Kafka does while it is still coming back.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from faststream.kafka import KafkaBroker
from mnistream_common.kafka import ProducerRenewal


@dataclass
class FakeConfig:
    refusals: int = 0  # connects that fail before one succeeds
    connect_s: float = 0.0
    connects: int = 0
    disconnects: int = 0
    connected: bool = True

    async def connect(self, **_: Any) -> None:
        self.connects += 1
        await asyncio.sleep(self.connect_s)
        if self.connects <= self.refusals:
            raise ConnectionError("Kafka is still starting")
        self.connected = True

    async def disconnect(self) -> None:
        self.disconnects += 1
        self.connected = False


@dataclass
class FakeBroker:
    config: FakeConfig = field(default_factory=FakeConfig)
    _connection_kwargs: dict[str, Any] = field(default_factory=dict)


def renewal(config: FakeConfig) -> ProducerRenewal:
    broker = cast(KafkaBroker, FakeBroker(config))
    return ProducerRenewal(broker, first_pause_s=0.01, max_pause_s=0.02)


async def test_a_producer_that_will_not_start_is_tried_again_until_it_does() -> None:
    config = FakeConfig(refusals=3)
    renew = renewal(config)

    renew.renew(renew.generation)
    await asyncio.wait_for(renew.wait(), 5)

    assert config.connected
    assert (config.disconnects, config.connects) == (4, 4)  # the old one, then each failed try
    assert not renew.replacing


async def test_a_caller_timing_out_does_not_leave_the_service_without_a_producer() -> None:
    """The send that met OutOfOrderSequenceNumber waits for the new producer under its own
    timeout; that timeout firing between the old producer's stop and the new one's start once
    left no producer at all."""
    config = FakeConfig(connect_s=0.2)
    renew = renewal(config)

    async def failed_send() -> None:
        renew.renew(renew.generation)
        await renew.wait()

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await failed_send()
    assert not config.connected  # cut short mid-replacement ...
    await asyncio.wait_for(renew.wait(), 5)
    assert config.connected  # ... which went on regardless


async def test_every_send_failing_on_one_producer_starts_one_replacement() -> None:
    config = FakeConfig(connect_s=0.05)
    renew = renewal(config)
    generation = renew.generation

    for _ in range(5):
        renew.renew(generation)
    await renew.wait()
    renew.renew(generation)  # a late failure of the old producer: already replaced
    await renew.wait()

    assert (config.disconnects, config.connects) == (1, 1)
    assert renew.generation == generation + 1


def test_a_broker_bootstraps_from_every_node_listed() -> None:
    """FastStream took "a:1,b:2" for one address, so services could reach no node of a
    three-broker cluster; each node must be an address of its own."""
    from mnistream_common.kafka import make_broker
    from mnistream_common.settings import KafkaSettings

    settings = KafkaSettings(kafka_bootstrap_servers="127.0.0.1:1, 127.0.0.1:2,127.0.0.1:3")
    broker = make_broker(settings, client_id="tests")
    servers = broker._connection_kwargs["bootstrap_servers"]
    assert servers == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]


@pytest.mark.parametrize("linger_ms", [0, 7])
def test_a_brokers_producer_lingers_as_kafka_linger_ms_says(
    linger_ms: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mnistream_common.kafka import make_broker
    from mnistream_common.settings import KafkaSettings

    monkeypatch.setenv("KAFKA_LINGER_MS", str(linger_ms))
    broker = make_broker(KafkaSettings(), client_id="tests")
    assert broker._connection_kwargs["linger_ms"] == linger_ms
    assert broker._connection_kwargs["acks"] == "all"
