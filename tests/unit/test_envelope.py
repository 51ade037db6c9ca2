"""Re-stamping a serialized envelope's message without parsing its data."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.api.envelope import envelope_bytes, stale_message, with_message

# JSON values, with the keys and text most likely to fool a splice.
TRICKY_TEXT = st.sampled_from(['message', ',"message":', '"error":null}', '\\', '"', 'é☃'])
TEXT = st.one_of(TRICKY_TEXT, st.text(max_size=20))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=20,
)


@given(data=JSON, old=TEXT, new=TEXT)
def test_with_message_equals_building_the_envelope_anew(data: object, old: str,
                                                        new: str) -> None:
    assert with_message(envelope_bytes(data, old), new) == envelope_bytes(data, new)


def test_with_message_keeps_the_data_when_it_has_message_keys() -> None:
    data = [{"message": "x", "error": None}, {"cmd": 'python -c "a,\\"message\\":1"'}]
    body = with_message(envelope_bytes(data, "ok"), "stale")
    assert orjson.loads(body) == {"success": True, "data": data, "message": "stale",
                                  "error": None}


@pytest.mark.parametrize("body", [b"", b"{}", orjson.dumps(
    {"success": False, "data": None, "message": None, "error": "boom"})])
def test_with_message_refuses_what_envelope_bytes_did_not_build(body: bytes) -> None:
    with pytest.raises(ValueError, match="envelope_bytes"):
        with_message(body, "stale")


def test_stale_message_says_what_failed_and_how_old_the_data_is() -> None:
    assert stale_message("Prometheus at http://p:9090 is unreachable: connection refused",
                         42.9) == ("Prometheus at http://p:9090 is unreachable: connection "
                                   "refused; serving data from 42 s ago")
