"""config.routers: the API's routes nested by their first path segment resolve and reverse exactly
as the flat list DRF's router writes."""

import re

from django.urls import NoReverseMatch, resolve, reverse

from config.routers import grouped_by_first_segment
from config.urls import router

SAMPLES = ("00000000-0000-4000-8000-000000000000", "sample", "0")


def _path_of(pattern) -> str:
    """The route's path with sample values its parameters accept."""
    names = re.compile(str(pattern.pattern)).groupindex
    for sample in SAMPLES:
        try:
            return reverse(pattern.name, kwargs=dict.fromkeys(names, sample))
        except NoReverseMatch:
            continue
    raise AssertionError(f"no sample value reverses {pattern.name}")


def test_every_route_resolves_to_its_own_view_through_the_groups():
    flat = router.flat_urls()
    assert len(flat) > 100

    for pattern in flat:
        path = _path_of(pattern)
        match = resolve(path)
        assert match.url_name == pattern.name, (path, match.url_name, pattern.name)
        assert match.func.cls is pattern.callback.cls


def test_paths_without_and_with_the_trailing_slash_resolve_alike():
    for path in ("/api/v1/organizations/current", "/api/v1/organizations/current/"):
        assert resolve(path).url_name == "organization-current"


def test_routes_are_nested_one_pattern_per_segment():
    grouped = router.urls

    assert len(grouped) < len(router.flat_urls()) / 4
    prefixes = [str(pattern.pattern) for pattern in grouped]
    assert len(prefixes) == len(set(prefixes))


def test_a_segment_that_starts_another_does_not_capture_its_routes():
    from django.urls import URLResolver, re_path
    from django.urls.resolvers import RegexPattern

    def view(request):
        return None

    patterns = grouped_by_first_segment(
        [re_path(r"^keys/?$", view, name="keys"), re_path(r"^keys-x/?$", view, name="keys-x")]
    )
    resolver = URLResolver(RegexPattern(r"^/"), patterns)

    assert resolver.resolve("/keys-x").url_name == "keys-x"
    assert resolver.resolve("/keys/").url_name == "keys"
