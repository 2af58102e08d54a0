"""The (prefix, viewset, basename) triples this app registers on the one API router."""

routes: list = []
