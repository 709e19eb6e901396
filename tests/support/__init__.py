"""Test support: real servers on loopback ports, started by the suite itself."""
