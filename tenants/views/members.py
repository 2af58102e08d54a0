"""Members and invitations (list, invite, resend, change, remove, accept): thin views over
tenants.services.members."""

from django.db.models import OuterRef, Subquery
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from config.schema import ErrorEnvelopeSerializer

from ..api import (
    PlatformViewSet,
    ServiceDestroyMixin,
    ServiceUpdateMixin,
    TenantScopedViewSet,
)
from ..emails import request_link_base
from ..filters import MemberFilter
from ..models import Invitation, InvitationStatus, Membership
from ..permissions import PUBLIC
from ..serializers.members import (
    InvitationAcceptedSerializer,
    InvitationAcceptSerializer,
    InvitationSentSerializer,
    MemberInviteSerializer,
    MemberSerializer,
    MemberUpdateSerializer,
    message_fields,
)
from ..services import members as services


@extend_schema_view(
    destroy=extend_schema(summary="Remove a member; for a pending invitation, revoke it")
)
class MemberViewSet(
    ServiceUpdateMixin,
    ServiceDestroyMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    TenantScopedViewSet,
):
    """The organization's members and pending invitations. People join by invitation
    (`invite`), so there is no create.

    API keys may read members but not manage them: a leaked key must not be able to invite
    someone who then keeps access after the key is revoked.
    """

    queryset = Membership.objects.all()
    serializer_class = MemberSerializer
    filterset_class = MemberFilter
    permission_area = "members"
    required_permissions = {"invite": "members.write", "resend": "members.write"}
    api_key_actions = frozenset({"list", "retrieve"})
    ordering_fields = ("created_at", "invited_at", "joined_at", "role", "status")
    update_serializer_class = MemberUpdateSerializer
    update_service = services.member_update
    destroy_service = services.member_remove
    service_object_name = "membership"

    def scope_queryset(self, queryset):
        pending = Invitation.objects.filter(
            membership=OuterRef("pk"), status=InvitationStatus.PENDING
        ).order_by("-created_at")
        return queryset.select_related("user").annotate(
            invitation_expires_at=Subquery(pending.values("expires_at")[:1])
        )

    def _sent(self, invitation) -> dict:
        # The service's transaction has committed, and its email gone or failed, by now; `sent`
        # is still None only under a caller's own transaction (the email goes at its commit).
        mailing = invitation.mailing
        email_sent = mailing is not None and mailing.sent is not False
        if email_sent:
            message = "Invitation sent successfully"
        elif mailing is None:
            message = "Invitation created; no email was sent. Send it with the resend action."
        else:
            message = (
                "The invitation stands, but its email could not be sent: the mail server did "
                "not take it. Send it again with the resend action."
            )
        return InvitationSentSerializer(
            {
                **message_fields(),
                "message": message,
                "member": self.refreshed(invitation.membership),
                "expires_at": invitation.expires_at,
                "email_sent": email_sent,
            }
        ).data

    @extend_schema(
        request=MemberInviteSerializer,
        responses={201: InvitationSentSerializer},
        summary="Invite someone by email; the accept link goes only to them",
    )
    @action(detail=False, methods=["post"], url_path="invite")
    def invite(self, request):
        serializer = MemberInviteSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        invitation = services.member_invite(
            tenant=request.tenant,
            actor=request.user,
            actor_permissions=request.permissions,
            link_base=request_link_base(request),
            **serializer.validated_data,
        )
        return Response(self._sent(invitation), status=status.HTTP_201_CREATED)

    @extend_schema(
        request=None,
        responses={200: InvitationSentSerializer},
        summary="Email a pending member a fresh invitation link (the previous one stops working)",
    )
    @action(detail=True, methods=["post"], url_path="resend")
    def resend(self, request, pk=None):
        invitation = services.invitation_resend(
            membership=self.get_object(),
            actor=request.user,
            actor_permissions=request.permissions,
            link_base=request_link_base(request),
        )
        return Response(self._sent(invitation))

    def perform_service_update(self, instance, data, *, partial):
        if not partial:
            # PUT replaces: overrides left out are cleared.
            data.setdefault("custom_permissions", {})
        return super().perform_service_update(instance, data, partial=partial)


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorEnvelopeSerializer, description=description)


class InvitationViewSet(PlatformViewSet):
    """Accepting an invitation: the token is the credential, so no other is read (a stale
    session never blocks joining), and callers are throttled per address (`auth` rate)."""

    required_permissions = {"accept": PUBLIC}
    anonymous_throttle_scope = "auth"

    def get_authenticators(self):
        return []

    @extend_schema(
        request=InvitationAcceptSerializer,
        responses={
            200: InvitationAcceptedSerializer,
            400: _error(
                "Unknown, expired, used or revoked token, or a missing name or weak password "
                "for a new account (VALIDATION_ERROR)."
            ),
            403: _error("The organization is suspended or cancelled (TENANT_SUSPENDED)."),
            409: _error("The account is already a member (CONFLICT)."),
            429: _error(
                "Too many attempts (RATE_LIMIT_EXCEEDED) or the organization has no free seat "
                "(QUOTA_EXCEEDED)."
            ),
        },
        auth=[],
        summary="Accept an invitation with its token (plus name and password for a new account)",
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="accept",
        serializer_class=InvitationAcceptSerializer,
    )
    def accept(self, request):
        serializer = InvitationAcceptSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        acceptance = services.invitation_accept(**serializer.validated_data)
        membership = acceptance.membership
        tenant = membership.tenant
        return Response(
            InvitationAcceptedSerializer(
                {
                    **message_fields(),
                    "message": "Invitation accepted",
                    "organization": {"id": tenant.pk, "slug": tenant.slug, "name": tenant.name},
                    "membership_id": membership.pk,
                    "user_id": membership.user_id,
                    "role": membership.role,
                    "account_created": acceptance.account_created,
                }
            ).data
        )
