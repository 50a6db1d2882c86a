"""A batch's states are written by msgspec in one call (gateway/store.py ``json_texts``):
for any list of values, each text is exactly the one ``json_text`` writes alone, NaN,
infinities, newlines in strings and values msgspec cannot write included."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import store

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["a\nb", "\u2028", "null"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=50, deadline=None)
@given(st.lists(values, max_size=8))
def test_each_text_is_what_json_text_writes(batch):
    assert store.json_texts(batch) == [store.json_text(value) for value in batch]


def test_one_value_msgspec_cannot_write_leaves_the_others_as_they_were():
    batch = [{"ms": 1}, {True: 1}, {"x": float("nan")}, {"ok": None}]
    assert store.json_texts(batch) == ['{"ms":1}', '{"true": 1}', '{"x": NaN}', '{"ok":null}']
