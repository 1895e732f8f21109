"""Fuzz target: the HL7 field reader, the MSH reader and the ACK builder (tests/unit/test_fuzz_hl7.py)."""

from driver import main

if __name__ == "__main__":
    main("hl7")
