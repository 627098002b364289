from rest_framework import serializers

from apps.orders.models import Order


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of converting them to text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class OrderCreateSerializer(serializers.Serializer):
    sku = StrictCharField(min_length=1, max_length=64, trim_whitespace=False)
    quantity = serializers.IntegerField(min_value=1, max_value=1000)


class OrderSerializer(serializers.ModelSerializer):
    class Meta:
        model = Order
        fields = ["id", "sku", "quantity", "status", "created_at"]
        read_only_fields = fields
