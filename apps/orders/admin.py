from django.contrib import admin

from apps.orders.models import Order, Product, Reservation


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "sku", "quantity", "amount_cents", "status", "cancel_reason", "created_at")
    list_filter = ("status", "created_at")
    search_fields = ("sku", "owner__username")
    date_hierarchy = "created_at"
    raw_id_fields = ("owner",)


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    list_display = ("order", "sku", "quantity", "event_id", "reserved_at")
    raw_id_fields = ("order",)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("sku", "name", "price_cents", "stock", "updated_at")
    search_fields = ("sku", "name")
