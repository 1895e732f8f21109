"""Sans-I/O protocol codecs (DICOM upper layer, MLLP, HL7), added by the protocol modes."""
