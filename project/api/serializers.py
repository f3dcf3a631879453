"""Serializers of the demo API (they also give the OpenAPI schema its shapes)."""

from rest_framework import serializers


class WhoAmISerializer(serializers.Serializer):
    identity = serializers.CharField()
    thumbprint = serializers.CharField(help_text="SHA-256 of the certificate's DER, 64 lowercase hex characters.")
    subject = serializers.CharField()
    issuer = serializers.CharField()
    serial_number = serializers.CharField(help_text="Hexadecimal.")
    not_after = serializers.DateTimeField()
    scopes = serializers.ListField(child=serializers.CharField())
    subject_alternative_names = serializers.DictField(child=serializers.ListField(child=serializers.CharField()))


class OrderSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    item = serializers.CharField(max_length=100)
    quantity = serializers.IntegerField(min_value=1, max_value=10_000, default=1)


class OrderListSerializer(serializers.Serializer):
    orders = OrderSerializer(many=True)


class PingSerializer(serializers.Serializer):
    identity = serializers.CharField(allow_null=True)
    ok = serializers.BooleanField()
