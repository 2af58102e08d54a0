"""The API's JSON parser: DRF's, with the limits every JSON body shares. (The size limit, for
every body type, is config.middleware.JSONErrorMiddleware's: it refuses a body declared over
`DATA_UPLOAD_MAX_MEMORY_SIZE` before anything reads it.)

- JSON depth: at most `API_JSON_MAX_DEPTH` nested arrays and objects (400 VALIDATION_ERROR).
  Deeper input would otherwise exhaust the interpreter's recursion while parsing, validating
  or rendering it.
- Text: JSON strings and keys may not hold lone surrogates (`"\\ud800"`), which JSON's escapes
  can express but UTF-8, the database and every response cannot (400 VALIDATION_ERROR).
"""

import re

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json

# A \\uD800-\\uDFFF escape: only bodies containing one can decode to a lone surrogate.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATES = re.compile("[\ud800-\udfff]")


def _too_deep() -> ParseError:
    return ParseError(
        f"JSON nested more than {settings.API_JSON_MAX_DEPTH} levels deep is not accepted."
    )


def check_json_value(value, *, max_depth: int) -> None:
    """Walk a parsed document without recursion: depth within `max_depth`, no lone
    surrogates in any string or key."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            if depth > max_depth:
                raise _too_deep()
            for key, child in item.items():
                if _SURROGATES.search(key):
                    raise ParseError("JSON keys may not contain unpaired surrogates (\\ud800).")
                stack.append((child, depth + 1))
        elif isinstance(item, list):
            if depth > max_depth:
                raise _too_deep()
            stack.extend((child, depth + 1) for child in item)
        elif isinstance(item, str) and _SURROGATES.search(item):
            raise ParseError("JSON strings may not contain unpaired surrogates (\\ud800).")


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read()
        encoding = parsers.get_encoding(parser_context or {})
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError:
            raise ParseError(f"The body is not valid {encoding} text.") from None
        try:
            data = json.loads(text, parse_constant=json.strict_constant if self.strict else None)
        except RecursionError:
            raise _too_deep() from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        max_depth = settings.API_JSON_MAX_DEPTH
        # Both checks walk the document; the counts below (in C) rule most bodies out first.
        nested = raw.count(b"[") + raw.count(b"{") > max_depth
        if nested or _SURROGATE_ESCAPE.search(raw):
            check_json_value(data, max_depth=max_depth)
        return data
