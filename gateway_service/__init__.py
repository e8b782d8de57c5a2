"""The LLM gateway: one gRPC API in front of many LLM providers, with failover that really happens."""
