"""Fuzz target: the DICOM PDU reader and stream tracker, the A-ASSOCIATE-RQ parser, the
called AE rewrite and the RJ/A-ABORT builders (tests/unit/test_fuzz_dicom.py)."""

from driver import main

if __name__ == "__main__":
    main("dicom")
