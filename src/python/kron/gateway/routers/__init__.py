"""The gateway's path operations, one module per area (FastAPI "bigger applications" layout)."""
