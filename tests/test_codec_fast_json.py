"""The telemetry codec parses with msgspec (devices/codec.py ``load_json_fast``): for every
payload it must give exactly what the contract's parser (devices/json_doc.py ``load_json``)
gives, the same document (types, key order, signed zeros) or the same refusal."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from devices.codec import load_json_fast
from devices.json_doc import load_json
from devices.rejections import Rejection
from gateway import store

DEPTH = 8
PROPERTY = settings(max_examples=50, deadline=None)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


def same(payload: bytes) -> None:
    fast, strict = load_json_fast(payload, DEPTH), load_json(payload, DEPTH)
    if isinstance(strict, Rejection):
        assert isinstance(fast, Rejection), (payload, fast)
        assert (fast.reason, fast.detail) == (strict.reason, strict.detail)
    else:
        assert repr(fast) == repr(strict), payload  # repr tells 1 from 1.0 from True


@PROPERTY
@given(documents, st.booleans())
def test_documents_parse_the_same(doc, ascii_only):
    same(json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))


@PROPERTY
@given(documents, st.data())
def test_damaged_documents_parse_or_fail_the_same(doc, data):
    payload = bytearray(json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(payload)))
        payload[at:at] = data.draw(st.binary(min_size=1, max_size=3))
    same(bytes(payload))


def test_payloads_msgspec_refuses_are_decided_by_the_contract_parser():
    cases = [
        b'\xef\xbb\xbf{"a": 1}',  # a UTF-8 byte order mark: skipped by the contract
        b'{"a": 1e400}',  # beyond a float: infinity, refused later by the value's range
        b'{"a": "\\ud800"}',  # a lone surrogate escape
        b'{"a": NaN}',
        b'{"a": "\xff"}',
        b'{"a": 1, "a": 2}',  # the last of repeated keys
        b"[" * (DEPTH + 1) + b"]" * (DEPTH + 1),  # too deep
        b"[" * DEPTH + b"]" * DEPTH,  # just deep enough
        b'{"a": 1} x',
        b"",
    ]
    for payload in cases:
        same(payload)


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**53), 2**53)
        | st.floats()
        | st.text(max_size=8),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_stored_json_reads_back_as_json_dumps_wrote_it(value):
    """States are written by msgspec unless a NaN or infinity is in them (msgspec would write
    null): whatever the value, the text reads back as ``json.dumps``'s does."""
    assert json.dumps(json.loads(store.json_text(value))) == json.dumps(value)
