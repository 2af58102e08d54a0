import re

from django.urls import URLPattern, include, re_path
from rest_framework.routers import SimpleRouter

# A route's regex as the router writes it: a literal first segment, then the rest.
_FIRST_SEGMENT = re.compile(r"^\^(?P<segment>[A-Za-z0-9_-]+)(?P<rest>/.*)$")


def grouped_by_first_segment(patterns: list) -> list:
    """The same routes, nested under one pattern per first path segment.

    Django tries a URL list in order until one matches: with every route of the API in one
    flat list (over a hundred and forty), a request to a route near the end tried every
    pattern before it, several microseconds each, on every request. Nested, a request tries one
    pattern per segment (about thirty), then the few routes of its own. Routes of different
    segments never match the same path, so only their order within a segment is kept. Names,
    reversing and the schema are unchanged: each route's regex is its segment followed by the
    rest of its own. A route whose regex does not start with a literal segment stays as it is."""
    groups: dict[object, list] = {}
    for position, pattern in enumerate(patterns):
        match = (
            _FIRST_SEGMENT.match(str(pattern.pattern)) if isinstance(pattern, URLPattern) else None
        )
        key = match["segment"] if match else position
        groups.setdefault(key, []).append((pattern, match))
    grouped = []
    for key, members in groups.items():
        if not isinstance(key, str):
            grouped.extend(pattern for pattern, _ in members)
            continue
        inner = [
            re_path(
                "^" + match["rest"],
                pattern.callback,
                kwargs=pattern.default_args,
                name=pattern.name,
            )
            for pattern, match in members
        ]
        grouped.append(re_path(f"^{key}", include(inner)))
    return grouped


class OptionalSlashRouter(SimpleRouter):
    """Every route answers with and without its trailing slash, without redirecting. Routes are
    nested by their first path segment (grouped_by_first_segment)."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"

    def flat_urls(self) -> list:
        """The routes as DRF's router lists them, one pattern each."""
        return super().get_urls()

    def get_urls(self):
        return grouped_by_first_segment(self.flat_urls())
