"""Image bytes in and out: decoding and encoding (codecs) and multi-page documents (PDF, TIFF)."""
