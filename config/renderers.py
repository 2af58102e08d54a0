"""The API's JSON renderer: DRF's, unable to fail on text."""

import copy

from rest_framework import renderers


class JSONRenderer(renderers.JSONRenderer):
    """Writes UTF-8 JSON; a string UTF-8 cannot encode (a lone surrogate, which the parsers
    refuse but a library message could still carry) is written as a `\\u` escape instead of
    failing the response."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            escaping = copy.copy(self)
            escaping.ensure_ascii = True
            return escaping.render(data, accepted_media_type, renderer_context)
