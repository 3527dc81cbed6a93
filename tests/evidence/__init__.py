"""The evidence format: the chain, its documented shell procedure, tampering."""
