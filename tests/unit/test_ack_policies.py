"""Commit after effect, for every consumer group: a handler that raises leaves its records
uncommitted (FastStream's NACK_ON_ERROR), so they are read again instead of lost. The readers
without a group (each process reads the whole topic, from the end or the ledger's start) keep
no offsets, so nothing of theirs is committed either way."""

from __future__ import annotations

import importlib

import pytest
from faststream import AckPolicy
from mnistream_common.topics import GROUP_TOPICS

SERVICES = ["gateway.app", "inference_worker.app", "history_service.app", "rescore_worker.app"]
# Every consumer group, as the topics module lists them.
GROUPS = set(GROUP_TOPICS)


def subscribers(module: str) -> list[object]:
    return list(importlib.import_module(module).describe_broker().subscribers)


@pytest.mark.parametrize("module", SERVICES)
def test_every_group_subscriber_nacks_on_error(module: str) -> None:
    for subscriber in subscribers(module):
        group = getattr(subscriber, "group_id", None)
        policy = getattr(subscriber, "ack_policy", None)
        if group is not None:
            assert policy is AckPolicy.NACK_ON_ERROR, (module, group, policy)


def test_every_group_is_found_in_some_service() -> None:
    found = {getattr(s, "group_id", None) for module in SERVICES for s in subscribers(module)}
    assert found >= GROUPS, GROUPS - found
