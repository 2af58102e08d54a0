from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from .models import AuthToken, hash_secret


class HashedTokenAuthentication(TokenAuthentication):
    """`Authorization: Token <key>`, looked up by the key's SHA-256 digest; expired keys fail.

    Unlike DRF's stock token, the database never holds a usable credential.
    """

    model = AuthToken

    def authenticate_credentials(self, key):
        try:
            token = AuthToken.objects.select_related("user").get(digest=hash_secret(key))
        except AuthToken.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        if token.expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed("Token has expired.")
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed("User inactive or deleted.")
        return token.user, token
