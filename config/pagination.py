"""Pagination. A malformed `page`, `page_size` or `cursor` is the client's input, so it answers
400 VALIDATION_ERROR naming the parameter (DRF answers 404, or quietly uses the default page
size); a well-formed page past the last one is 404."""

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination, PageNumberPagination


def _positive_int_or_400(request, parameter: str) -> None:
    raw = request.query_params.get(parameter)
    if raw is None:
        return
    if not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
        raise ValidationError({parameter: ["Must be a whole number of 1 or more."]})


class StandardPagination(PageNumberPagination):
    """Page-number pagination: `page`, `page_size` (default 20, at most 100: larger sizes are
    reduced to 100)."""

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def paginate_queryset(self, queryset, request, view=None):
        if request.query_params.get(self.page_query_param) not in self.last_page_strings:
            _positive_int_or_400(request, self.page_query_param)
        _positive_int_or_400(request, self.page_size_query_param)
        return super().paginate_queryset(queryset, request, view)


class EventCursorPagination(CursorPagination):
    """Cursor pagination for append-only, high-volume lists: stable under concurrent inserts."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 100
    ordering = ("-created_at", "-id")

    def paginate_queryset(self, queryset, request, view=None):
        _positive_int_or_400(request, self.page_size_query_param)
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError(
                {self.cursor_query_param: ["Invalid cursor: use the `next` or `previous` link."]}
            ) from None
