"""Fuzz target: the MLLP frame decoder (tests/unit/test_fuzz_mllp.py)."""

from driver import main

if __name__ == "__main__":
    main("mllp")
