from django.urls import path

from apps.outbox.api import (
    OutboxMessageDiscardView,
    OutboxMessageListView,
    OutboxMessageRedriveView,
    OutboxMessageRetryView,
    OutboxStatsView,
)

app_name = "outbox"
urlpatterns = [
    path("stats/", OutboxStatsView.as_view(), name="stats"),
    path("messages/", OutboxMessageListView.as_view(), name="messages"),
    path("messages/<id:message_id>/retry/", OutboxMessageRetryView.as_view(), name="message-retry"),
    path("messages/<id:message_id>/discard/", OutboxMessageDiscardView.as_view(), name="message-discard"),
    path("messages/<id:message_id>/redrive/", OutboxMessageRedriveView.as_view(), name="message-redrive"),
]
