from django.urls import path

from apps.notifications import api

app_name = "webhooks"
urlpatterns = [
    path("endpoints/", api.EndpointListCreateView.as_view(), name="endpoints"),
    path("endpoints/<uuid:endpoint_id>/", api.EndpointDetailView.as_view(), name="endpoint"),
    path("endpoints/<uuid:endpoint_id>/secret/", api.EndpointSecretView.as_view(), name="secret"),
    path("endpoints/<uuid:endpoint_id>/rotate-secret/", api.EndpointRotateView.as_view(), name="rotate"),
    path("endpoints/<uuid:endpoint_id>/test/", api.EndpointTestView.as_view(), name="test"),
    path("endpoints/<uuid:endpoint_id>/recover/", api.EndpointRecoverView.as_view(), name="recover"),
    path("messages/", api.MessageListView.as_view(), name="messages"),
    path("messages/<uuid:message_id>/", api.MessageDetailView.as_view(), name="message"),
    path("messages/<uuid:message_id>/replay/", api.MessageReplayView.as_view(), name="replay"),
    path("event-types/", api.EventTypeListView.as_view(), name="event-types"),
]
