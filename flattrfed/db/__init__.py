"""Database layer: models, column types, engines and migrations (no business rules)."""
