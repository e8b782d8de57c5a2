"""Migration files and helpers for the migration engine's tests."""
