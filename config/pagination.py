"""Pagination. A malformed `page`, `page_size` or `cursor` is the client's input, so it answers
400 VALIDATION_ERROR naming the parameter (DRF answers 404, or quietly uses the default page
size); a well-formed page past the last one is 404.

Pages are slices of one total order: a page-number list's ordering is followed by the model's
own and ends with the primary key (`in_total_order`), and the cursor's is `(-created_at, -id)`."""

from django.core.paginator import EmptyPage, Paginator
from django.db.models import OrderBy, QuerySet
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination, PageNumberPagination


def _whole_number(number) -> int | None:
    """A page number or size of 1 or more, as an int or a parameter's digits; else None."""
    if isinstance(number, int) and not isinstance(number, bool):
        return number if number >= 1 else None
    if isinstance(number, str) and number.isascii() and number.isdigit() and int(number) >= 1:
        return int(number)
    return None


def _positive_int_or_400(request, parameter: str) -> None:
    raw = request.query_params.get(parameter)
    if raw is not None and _whole_number(raw) is None:
        raise ValidationError({parameter: ["Must be a whole number of 1 or more."]})


def in_total_order(queryset):
    """`queryset` in an order in which no two rows tie: its ordering (`?ordering=`, the view's,
    or the model's), then, for the rows that tie on it, the model's own ordering, then the
    primary key (unless a term already is the key). Rows that tie on every term (a status, a
    tier, a name, a creation time shared by one transaction's rows) are in no set order
    otherwise, and each page is its own query: PostgreSQL's top-N sort puts the tied rows
    differently from one OFFSET to the next, so a client paging through the list saw some
    rows twice and others never.

    The terms added run backwards when the ordering's last term is descending, so that `-x`
    lists exactly the reverse of `x`: one index on `(tenant, x, <the model's order>, id)`
    serves both, walked forwards or backwards, and the same index serves a filter on `x` in
    the model's order. Within a status, say, rows come newest first (a list ordered newest
    first), not in the order of their random ids.

    Aggregated, combined, sliced or randomly ordered querysets are left as they are."""
    if not isinstance(queryset, QuerySet):
        return queryset
    query = queryset.query
    if query.group_by is not None or query.combinator or query.is_sliced:
        return queryset
    model_ordering = list(queryset.model._meta.ordering)
    ordering = list(query.order_by or (model_ordering if query.default_ordering else ()))
    if "?" in ordering:
        return queryset
    key = queryset.model._meta.pk
    keys = ("pk", key.name, key.attname)
    if any(_names(term) in keys for term in ordering):
        return queryset  # no two rows tie already
    backwards = bool(ordering) and _descending(ordering[-1])
    if all(isinstance(term, str) for term in model_ordering):
        named = {_names(term) for term in ordering}
        ordering += [
            _reversed(term) if backwards else term
            for term in model_ordering
            if term.lstrip("-") not in named
        ]
    if not any(_names(term) in keys for term in ordering):
        ordering.append("-pk" if ordering and _descending(ordering[-1]) else "pk")
    return queryset.order_by(*ordering)


def _reversed(term: str) -> str:
    return term[1:] if term.startswith("-") else f"-{term}"


def _names(term) -> str | None:
    if isinstance(term, str):
        return term.lstrip("-")
    expression = term.expression if isinstance(term, OrderBy) else term
    return getattr(expression, "name", None)  # F("pk")


def _descending(term) -> bool:
    return (
        term.startswith("-") if isinstance(term, str) else bool(getattr(term, "descending", False))
    )


class CountingPaginator(Paginator):
    """Django's paginator, counting the rows from the page itself when the page shows the end
    of the list.

    Django counts first (a COUNT of the whole filtered list, to check the page number), then
    reads the page: two statements, each compiled by the ORM. Here the page is read first, one
    row longer than a page: when that extra row is not there, the page holds the list's last
    rows and the count is the rows before it plus the rows on it, exactly, from the same
    statement (a list that fits on one page, the usual case, is read in one statement). Only
    when more rows follow is the list counted as Django counts it. A page past the end, its
    rows empty, is the EmptyPage Django raises."""

    def page(self, number):
        whole = _whole_number(number)
        if whole is None or self.orphans or not self.allow_empty_first_page:
            return super().page(number)  # Django's checks, errors and count
        if whole > _LARGEST_PAGE_READ // self.per_page:
            return super().page(number)  # counted first: past the end, never an OFFSET so large
        if "count" in self.__dict__:
            return super().page(whole)  # counted already (the `last` page)
        bottom = (whole - 1) * self.per_page
        rows = list(self.object_list[bottom : bottom + self.per_page + 1])
        if len(rows) > self.per_page:
            # More rows follow: the page is valid whatever the count, which is Django's.
            return self._get_page(rows[: self.per_page], whole, self)
        if not rows and whole > 1:
            raise EmptyPage(self.error_messages["no_results"])
        self.count = bottom + len(rows)  # set where the cached property keeps its value
        return self._get_page(rows, whole, self)


# Pages further than this are judged by the count before any row is read: an OFFSET past a
# 64-bit integer is an error of the database, not an empty page.
_LARGEST_PAGE_READ = 2**62


class StandardPagination(PageNumberPagination):
    """Page-number pagination: `page`, `page_size` (default 20, at most 100: larger sizes are
    reduced to 100), over the list's ordering made total (`in_total_order`), counted from the
    page when it is the last (`CountingPaginator`)."""

    django_paginator_class = CountingPaginator
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def paginate_queryset(self, queryset, request, view=None):
        if request.query_params.get(self.page_query_param) not in self.last_page_strings:
            _positive_int_or_400(request, self.page_query_param)
        _positive_int_or_400(request, self.page_size_query_param)
        return super().paginate_queryset(in_total_order(queryset), request, view)


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
