from rest_framework.pagination import CursorPagination, PageNumberPagination


class StandardPagination(PageNumberPagination):
    """Page-number pagination: `page`, `page_size` (default 20, max 100)."""

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100


class EventCursorPagination(CursorPagination):
    """Cursor pagination for append-only, high-volume lists: stable under concurrent inserts."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 100
    ordering = ("-created_at", "-id")
