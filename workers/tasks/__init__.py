"""Thin task entry points: parse arguments, call an app service, return small JSON."""
