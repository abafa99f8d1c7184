"""A price record carries its sampled update's trace context through Redis, and nothing else."""

from __future__ import annotations

import pytest
from websocket_streaming.book import PriceRecord

TRACEPARENT = f"00-{'a' * 32}-{'b' * 16}-01"


@pytest.mark.unit
def test_a_sampled_records_traceparent_survives_the_round_trip() -> None:
    record = PriceRecord("BTCUSDT", 1.5)
    record.trace = TRACEPARENT
    assert PriceRecord.from_dict(record.to_dict()).trace == TRACEPARENT


@pytest.mark.unit
def test_an_unsampled_record_publishes_no_traceparent() -> None:
    assert "traceparent" not in PriceRecord("BTCUSDT", 1.5).to_dict()


@pytest.mark.unit
@pytest.mark.parametrize("given", [TRACEPARENT + "0" * 10_000, 42, None, ["x"]])
def test_a_foreign_or_oversized_traceparent_is_dropped(given: object) -> None:
    data = PriceRecord("BTCUSDT", 1.5).to_dict() | {"traceparent": given}
    assert PriceRecord.from_dict(data).trace is None
