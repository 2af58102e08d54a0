"""Content negotiation: DRF's, with its answer for a request that asks for nothing in
particular found without parsing.

DRF's DefaultContentNegotiation reads the request's headers into a `HttpHeaders` mapping,
tokenizes and ranks the Accept header and builds the query string's QueryDict on every
request, to choose among the view's renderers. Most requests (an SDK's `Accept:
application/json`, curl's `*/*`, none at all) take the first renderer whatever is parsed;
those are answered here as DRF answers them, and every other request (another media type,
several, parameters, a `?format=` or a format suffix) goes through DRF's own.
"""

from rest_framework.negotiation import DefaultContentNegotiation


class ContentNegotiation(DefaultContentNegotiation):
    def select_renderer(self, request, renderers, format_suffix=None):
        if not format_suffix and renderers:
            first = renderers[0]
            http = getattr(request, "_request", request)
            accept = http.META.get("HTTP_ACCEPT", "*/*")
            # "*/*" matches the first renderer, and DRF then names the renderer's own media
            # type; an Accept equal to that media type is returned as given, the same text.
            if (accept == "*/*" or accept == first.media_type) and not self._format_asked(http):
                return first, first.media_type
        return super().select_renderer(request, renderers, format_suffix)

    def _format_asked(self, http) -> bool:
        name = self.settings.URL_FORMAT_OVERRIDE
        if not name or not http.META.get("QUERY_STRING"):
            return False
        return bool(http.GET.get(name))
