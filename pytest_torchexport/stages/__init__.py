"""The stages of one (backend, device) check and the ``Check`` they share; see docs/architecture.md."""
