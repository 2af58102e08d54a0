from rest_framework.routers import SimpleRouter


class OptionalSlashRouter(SimpleRouter):
    """Every route answers with and without its trailing slash, without redirecting."""

    def __init__(self):
        super().__init__()
        self.trailing_slash = "/?"
