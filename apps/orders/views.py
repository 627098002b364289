"""Orders API: place, list and fetch your own orders."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.pagination import PageQuerySerializer, StandardPagination
from apps.orders.catalog import product_list
from apps.orders.selectors import order_get, order_list
from apps.orders.serializers import OrderCreateSerializer, OrderSerializer, ProductSerializer
from apps.orders.services import order_place


class OrderListCreateView(GenericAPIView):
    # GenericAPIView only for its pagination hooks, which also document page/page_size in OpenAPI.
    pagination_class = StandardPagination
    serializer_class = OrderSerializer

    @extend_schema(operation_id="orders_list", parameters=[PageQuerySerializer], responses=OrderSerializer(many=True))
    def get(self, request: Request) -> Response:
        PageQuerySerializer(data=request.query_params).is_valid(raise_exception=True)
        page = self.paginate_queryset(order_list(owner=request.user))
        return self.get_paginated_response(OrderSerializer(page, many=True).data)

    @extend_schema(
        operation_id="orders_create", request=OrderCreateSerializer, responses={201: OrderSerializer},
        parameters=[OpenApiParameter("Location", str, OpenApiParameter.HEADER, response=[201], required=True,
                                     description="The new order's URL.")],
        examples=[OpenApiExample("two books", value={"sku": "BOOK-1", "quantity": 2}, request_only=True)],
    )
    def post(self, request: Request) -> Response:
        serializer = OrderCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        order = order_place(owner=request.user, **serializer.validated_data)
        location = request.build_absolute_uri(reverse("orders:detail", kwargs={"order_id": order.pk}))
        return Response(OrderSerializer(order).data, status=status.HTTP_201_CREATED, headers={"Location": location})


class OrderDetailView(APIView):
    @extend_schema(operation_id="orders_retrieve", responses=OrderSerializer)
    def get(self, request: Request, order_id: int) -> Response:
        return Response(OrderSerializer(order_get(owner=request.user, order_id=order_id)).data)


class ProductListView(GenericAPIView):
    """The catalog: any authenticated caller may read it."""

    pagination_class = StandardPagination
    serializer_class = ProductSerializer

    @extend_schema(operation_id="products_list", parameters=[PageQuerySerializer],
                   responses=ProductSerializer(many=True))
    def get(self, request: Request) -> Response:
        PageQuerySerializer(data=request.query_params).is_valid(raise_exception=True)
        page = self.paginate_queryset(product_list())
        return self.get_paginated_response(ProductSerializer(page, many=True).data)
