from django.urls import path

from apps.sagas.api import SagaCancelView, SagaDetailView, SagaListView, SagaResolveView, SagaRetryView

app_name = "sagas"
urlpatterns = [
    path("", SagaListView.as_view(), name="list"),
    path("<uuid:saga_id>/", SagaDetailView.as_view(), name="detail"),
    path("<uuid:saga_id>/cancel/", SagaCancelView.as_view(), name="cancel"),
    path("<uuid:saga_id>/retry/", SagaRetryView.as_view(), name="retry"),
    path("<uuid:saga_id>/resolve/", SagaResolveView.as_view(), name="resolve"),
]
