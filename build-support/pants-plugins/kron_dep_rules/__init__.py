"""A Pants plugin that makes `pants lint` enforce kron's dependency rules (see register.py)."""
