from django.urls import path

from apps.orders.views import ProductListView

app_name = "products"
urlpatterns = [path("", ProductListView.as_view(), name="list")]
