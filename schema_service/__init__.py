"""The schema service: sole owner of the PostgreSQL schema, and the metrics store."""
