"""gpu-shard-webhook: multi-GPU llama.cpp sharding for plain Kubernetes pods."""

__version__ = "0.1.0"
