"""fedinv.agents."""
