from django.conf import settings
from django.db import models
from django.db.models import Q


class Product(models.Model):
    """A sellable SKU with its current price and the stock left to reserve."""

    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    price_cents = models.PositiveIntegerField()
    stock = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["sku"]
        constraints = [models.CheckConstraint(condition=~Q(sku=""), name="product_sku_not_empty")]

    def __str__(self) -> str:
        return f"{self.sku} ({self.name})"


class Order(models.Model):
    """An order for a quantity of one SKU, owned by the user who placed it."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RESERVED = "reserved"
        PAID = "paid"
        CONFIRMED = "confirmed"
        CANCELLED = "cancelled"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="orders")
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()
    # The price is copied at placing time so a later catalog change does not alter what the customer agreed to.
    amount_cents = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    cancel_reason = models.CharField(max_length=64, blank=True, default="",
                                     help_text="Why the order was cancelled, e.g. out_of_stock.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at", "-id"], name="order_owner_newest")]
        constraints = [
            models.CheckConstraint(condition=Q(quantity__gte=1, quantity__lte=1000), name="order_quantity_range"),
            models.CheckConstraint(condition=~Q(sku=""), name="order_sku_not_empty"),
        ]

    def __str__(self) -> str:
        return f"Order {self.pk}: {self.quantity} × {self.sku}"


class Reservation(models.Model):
    """Stock reserved for an order by the checkout saga's reserve step; released by its compensation."""

    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="reservation")
    sku = models.CharField(max_length=64)
    quantity = models.PositiveIntegerField()
    event_id = models.UUIDField(help_text="The order.placed event that caused it.")
    reserved_at = models.DateTimeField(auto_now_add=True)
    # Set when the checkout compensated: the stock went back to the product (once: only while null).
    released_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Reservation for order {self.order_id}"


class Payment(models.Model):
    """The order's charge at the payment provider, as the checkout saga's charge step and refund saw it."""

    class Status(models.TextChoices):
        PENDING = "pending"  # recorded before the first charge request; not charged as far as we know
        CHARGED = "charged"
        DECLINED = "declined"
        REFUNDED = "refunded"

    order = models.OneToOneField(Order, on_delete=models.CASCADE, related_name="payment")
    amount_cents = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # The saga step's stable key, sent as the provider's Idempotency-Key: a retried charge is the same charge.
    idempotency_key = models.CharField(max_length=200, unique=True)
    provider_charge_id = models.CharField(max_length=200, blank=True)
    # A charge request timed out or lost its connection: the provider may have charged. The refund then
    # asks again with the same key (the provider answers with that charge, or a decline) before refunding.
    uncertain = models.BooleanField(default=False)
    provider_refund_id = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Payment for order {self.order_id} ({self.status})"


class SandboxCharge(models.Model):
    """A charge the sandbox payment provider made (embedded default only); one per Idempotency-Key."""

    idempotency_key = models.CharField(max_length=200, unique=True)
    charge_id = models.CharField(max_length=64, unique=True)
    order_id = models.BigIntegerField()
    amount_cents = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3)
    declined = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Sandbox charge {self.charge_id}"


class SandboxRefund(models.Model):
    """A refund the sandbox payment provider made; one per Idempotency-Key and at most one per charge."""

    idempotency_key = models.CharField(max_length=200, unique=True)
    refund_id = models.CharField(max_length=64, unique=True)
    charge = models.OneToOneField(SandboxCharge, on_delete=models.CASCADE, related_name="refund")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"Sandbox refund {self.refund_id}"
