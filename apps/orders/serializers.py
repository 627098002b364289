from rest_framework import serializers

from apps.core.serializers import StrictSerializer
from apps.orders.models import Order, Product


class OrderCreateSerializer(StrictSerializer):
    sku = serializers.CharField(min_length=1, max_length=64, trim_whitespace=False)
    quantity = serializers.IntegerField(min_value=1, max_value=1000)


class OrderSerializer(serializers.ModelSerializer):
    class Meta:
        model = Order
        fields = ["id", "sku", "quantity", "amount_cents", "status", "cancel_reason", "created_at"]
        read_only_fields = fields


class ProductSerializer(serializers.ModelSerializer):
    class Meta:
        model = Product
        fields = ["sku", "name", "price_cents", "stock"]
        read_only_fields = fields
