"""Text validators shared by models (so the admin checks them too) and serializers.

Names are shown in lists, the admin, emails and audit payloads. A control character (U+0007),
an invisible one (U+200B) or a bidirectional override (U+202E) in a name garbles or disguises
what staff and other members read, so names refuse them. Free text (descriptions, reasons)
keeps tabs and line breaks but refuses the other control characters.
"""

import functools
import re
import unicodedata

from django.core.exceptions import ValidationError
from django.core.validators import DomainNameValidator, RegexValidator
from django.utils.deconstruct import deconstructible

# The bidirectional embeddings, overrides and isolates: they reorder the text around them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Invisible characters that make a name look like another or like nothing: format characters
# (category Cf: zero-width space, word joiner, marks, BOM, ...), the combining grapheme joiner,
# the blank Braille pattern and the Hangul fillers.
# The zero-width (non-)joiners stay allowed: Persian and Indic names and emoji sequences use them.
_JOINERS = frozenset("\u200c\u200d")
_FILLERS = frozenset("\u034f\u115f\u1160\u2800\u3164\uffa0")
_TEXT_WHITESPACE = frozenset("\t\n\r")
# Descriptions: long enough for a paragraph or two, short enough for every list that shows them.
DESCRIPTION_MAX_LENGTH = 2000


def _describe(char: str) -> str:
    name = unicodedata.name(char, "control character")
    return f"U+{ord(char):04X} ({name.lower()})"


def _refused_in_name(char: str) -> bool:
    category = unicodedata.category(char)
    # Zl, Zp: the line and paragraph separators (U+2028, U+2029) break a one-line name.
    if category in ("Cc", "Cs", "Zl", "Zp") or char in _FILLERS:
        return True
    return category == "Cf" and char not in _JOINERS


def _refused_in_text(char: str) -> bool:
    if char in _TEXT_WHITESPACE:
        return False
    return unicodedata.category(char) in ("Cc", "Cs") or char in _BIDI_CONTROLS


@deconstructible
class SafeTextValidator:
    """Names (`multiline=False`): no control, invisible or bidirectional formatting character.
    Text (`multiline=True`): no control character but tab and line breaks, no bidirectional
    override. Neither accepts a lone surrogate."""

    def __init__(self, *, multiline: bool = False):
        self.multiline = multiline

    def __call__(self, value):
        if not isinstance(value, str):
            return
        refused = _refused_in_text if self.multiline else _refused_in_name
        char = next((char for char in value if refused(char)), None)
        if char is not None:
            kind = "Text" if self.multiline else "A name"
            raise ValidationError(
                f"{kind} may not contain {_describe(char)}.", code="invalid_character"
            )

    def __eq__(self, other):
        return isinstance(other, SafeTextValidator) and other.multiline == self.multiline

    @property
    def pattern(self) -> str:
        """The rule as an OpenAPI `pattern` (ECMA-262), for the schema: exact for every
        character of the Basic Multilingual Plane. (A pattern without ECMA's `u` flag reads a
        string as UTF-16 code units, where a character beyond that plane is two surrogates: the
        few such format characters a name refuses are left out of it, so an emoji still
        matches.)"""
        return _pattern(self.multiline)


@functools.cache
def _pattern(multiline: bool) -> str:
    refused = _refused_in_text if multiline else _refused_in_name
    ranges, start = [], None
    for code in range(0x10000):
        hit = not 0xD800 <= code <= 0xDFFF and refused(chr(code))
        if hit and start is None:
            start = code
        elif not hit and start is not None:
            ranges.append((start, code - 1))
            start = None
    spans = "".join(
        f"\\u{first:04X}" if first == last else f"\\u{first:04X}-\\u{last:04X}"
        for first, last in ranges
    )
    return f"^[^{spans}]*$"


validate_name = SafeTextValidator(multiline=False)
validate_text = SafeTextValidator(multiline=True)

# A host name (IDNs accepted), e.g. `acme.example.com`; no scheme, path or port.
validate_domain = DomainNameValidator(message="Enter a domain name such as acme.example.com.")

# International or local phone numbers: digits with the usual separators, an optional
# leading +, and at least five digits. `(?!\n)$` is the end of the text in Python (whose `$`
# alone also matches before a final newline) and in the OpenAPI schema's ECMAScript, where
# the pattern is published and `\Z` does not exist.
validate_phone = RegexValidator(
    regex=re.compile(r"^\+?(?=(?:\D*\d){5})[0-9(][0-9 ().\-/]*[0-9](?!\n)$"),
    message="Enter a phone number: digits, spaces, ( ) . - / and an optional leading +.",
    code="invalid_phone",
)
