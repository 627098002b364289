from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.core.admin_base import OperatedAdminMixin, ReadOnlyAdmin
from apps.core.audit import Actor, Via
from apps.core.errors import TaskplaneError
from apps.orders.models import Order, Payment, Product, Reservation, SandboxCharge, SandboxRefund
from apps.orders.services import order_approve


@admin.register(Order)
class OrderAdmin(OperatedAdminMixin, admin.ModelAdmin):
    list_display = ("id", "owner", "sku", "quantity", "amount_cents", "status", "cancel_reason", "created_at")
    list_filter = ("status", "cancel_reason", "created_at")
    search_fields = ("sku", "owner__username")
    date_hierarchy = "created_at"
    raw_id_fields = ("owner",)
    actions = ["approve"]

    @admin.action(description="Approve selected orders waiting for approval", permissions=["operate"])
    def approve(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        actor = Actor.from_request(request, via=Via.ADMIN)
        approved, refused = 0, []
        for order_id in queryset.values_list("id", flat=True):
            try:
                order_approve(order_id=order_id, actor=actor, reason="approved in admin")
                approved += 1
            except TaskplaneError as exc:  # each order alone: one refusal does not stop the others
                refused.append(exc.detail)
        if approved:
            self.message_user(request, f"Approved {approved} order(s); their checkout goes on.", messages.SUCCESS)
        for detail in refused:
            self.message_user(request, detail, messages.WARNING)


@admin.register(Reservation)
class ReservationAdmin(ReadOnlyAdmin):
    list_display = ("order", "sku", "quantity", "event_id", "reserved_at", "released_at")
    raw_id_fields = ("order",)


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = ("order", "status", "amount_cents", "currency", "provider_charge_id", "provider_refund_id",
                    "uncertain", "created_at")
    list_filter = ("status", "uncertain")
    search_fields = ("=provider_charge_id", "=idempotency_key")


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("sku", "name", "price_cents", "stock", "updated_at")
    search_fields = ("sku", "name")


@admin.register(SandboxCharge)
class SandboxChargeAdmin(ReadOnlyAdmin):
    """What the sandbox payment provider (embedded default) charged or declined."""

    list_display = ("charge_id", "order_id", "amount_cents", "currency", "declined", "created_at")
    list_filter = ("declined",)
    search_fields = ("=charge_id", "=idempotency_key")


@admin.register(SandboxRefund)
class SandboxRefundAdmin(ReadOnlyAdmin):
    list_display = ("refund_id", "charge", "created_at")
    search_fields = ("=refund_id", "=idempotency_key")
