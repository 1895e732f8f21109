"""Fuzz target: the HTTP request head rules (tests/unit/test_fuzz_http.py)."""

from driver import main

if __name__ == "__main__":
    main("http")
