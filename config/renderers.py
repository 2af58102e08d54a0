"""The API's renderers: JSON (DRF's, unable to fail on text) and CSV for the reports that
regulators and spreadsheets read."""

import copy
import csv
import io

from rest_framework import renderers


class JSONRenderer(renderers.JSONRenderer):
    """Writes UTF-8 JSON; a string UTF-8 cannot encode (a lone surrogate, which the parsers
    refuse but a library message could still carry) is written as a `\\u` escape instead of
    failing the response."""

    def get_indent(self, accepted_media_type, renderer_context):
        # DRF's looks up an `indent` parameter even when the accepted type has none, raising
        # and catching a KeyError on every response; the same answer without it.
        if accepted_media_type and ";" in accepted_media_type:
            return super().get_indent(accepted_media_type, renderer_context)
        return renderer_context.get("indent", None)

    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            escaping = copy.copy(self)
            escaping.ensure_ascii = True
            return escaping.render(data, accepted_media_type, renderer_context)


# A spreadsheet runs a cell starting with one of these as a formula (CSV injection): such a
# cell is written with a leading apostrophe, which spreadsheets show as text.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value) -> str:
    """One CSV cell: text as is (a would-be formula quoted), None empty, booleans yes/no,
    dates and times ISO 8601."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


class CSVRenderer(renderers.BaseRenderer):
    """text/csv (`?format=csv` or `Accept: text/csv`) for a view answering a table:
    `{"columns": [...], "rows": [[...], ...]}`. Errors stay JSON (tenants.api answers them
    with the JSON renderer)."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data, accepted_media_type=None, renderer_context=None):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(data["columns"])
        for row in data["rows"]:
            writer.writerow([csv_cell(value) for value in row])
        return buffer.getvalue().encode()
