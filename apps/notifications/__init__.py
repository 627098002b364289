"""Signed webhooks (Standard Webhooks): endpoints, messages fanned out from events, durable retried deliveries."""
