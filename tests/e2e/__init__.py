"""End-to-end tests: the real stack (test_stack.py) and injected faults (test_faults.py)."""
