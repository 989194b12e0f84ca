"""Test harness: real instances on loopback ports, their databases, the test resolver."""
