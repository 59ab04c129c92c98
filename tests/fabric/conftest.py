"""Real-Fabric tests: the session `network` fixture is in tests/conftest.py."""
