"""Rate-limit budgets (memory or Redis): core (shared vocabulary), memory, redis_limiter, budgets."""
