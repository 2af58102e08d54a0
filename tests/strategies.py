"""Hypothesis strategies shared by the property tests that check a validation fast path against
the serializer it stands in for."""

from hypothesis import strategies as st

# Text a fast path must leave to the serializer or read exactly as it does: blanks, padding,
# tabs and line breaks, control, invisible, bidirectional and separator characters, a lone
# surrogate, text beyond ASCII.
AWKWARD_STRINGS = (
    "",
    " ",
    "  padded  ",
    "tab\there",
    "line\nbreak",
    "nul\x00",
    "bell\x07",
    "bidi\u202e",
    "zero\u200bwidth",
    "sep\u2028",
    "\ud800",
    "é ü 中文 🙂",
)


def awkward_text(*lengths: int):
    """The awkward strings above, and strings of each of `lengths` (the limits, and one past)."""
    return st.sampled_from([*AWKWARD_STRINGS, *("x" * length for length in lengths)])


# A JSON value of another type than the one a field expects.
OTHER_JSON = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10),
    st.floats(allow_nan=True),
    st.just([]),
    st.just({}),
)
