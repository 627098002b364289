"""/sandbox/payments/: routed by settings/urls.py only while PAYMENTS_SANDBOX (PAYMENTS_URL unset)."""

from django.urls import path

from apps.orders import sandbox

app_name = "sandbox_payments"
urlpatterns = [
    path("charges", sandbox.charges, name="charges"),
    path("refunds", sandbox.refunds, name="refunds"),
]
