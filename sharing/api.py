"""The shares API: list the user's links, create one, revoke one (DELETE)."""
from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.response import Response

from . import selectors, services
from .models import Share
from .serializers import ShareCreateSerializer, ShareSerializer


class ShareViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin,
                   viewsets.GenericViewSet):
    """Read-only links. DELETE revokes (the link then answers 404); the row stays listed as revoked."""

    serializer_class = ShareSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Share.objects.none()
        return selectors.shares_of(self.request.user)

    @extend_schema(request=ShareCreateSerializer, responses={201: ShareSerializer})
    def create(self, request, *args, **kwargs):
        data = ShareCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        share = services.share_create(owner=request.user, **data.validated_data)
        return Response(ShareSerializer(share, context={"request": request}).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, *args, **kwargs):
        services.share_revoke(share=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
