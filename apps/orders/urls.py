from django.urls import path

from apps.orders.views import OrderDetailView, OrderListCreateView

app_name = "orders"
urlpatterns = [
    path("", OrderListCreateView.as_view(), name="list"),
    path("<id:order_id>/", OrderDetailView.as_view(), name="detail"),
]
