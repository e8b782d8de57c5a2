"""The migration engine: files, plan, lock, apply, history, journal (no gRPC in here)."""
