"""Django settings package: base, local (embedded default), test and production."""
