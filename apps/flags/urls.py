from django.urls import path, re_path

from apps.flags.api import FlagDetailView, FlagEvaluateView, FlagListCreateView
from apps.flags.models import KEY_PATTERN

app_name = "flags"
urlpatterns = [
    path("", FlagListCreateView.as_view(), name="list"),
    # Before the key route: "evaluate" is itself a valid key, so that flag is managed in admin or the CLI.
    path("evaluate/", FlagEvaluateView.as_view(), name="evaluate"),
    # Keys outside the pattern never match, so they get the routing 404 problem, not a lookup.
    re_path(rf"^(?P<key>{KEY_PATTERN.removeprefix('^').removesuffix('$')})/$", FlagDetailView.as_view(),
            name="detail"),
]
