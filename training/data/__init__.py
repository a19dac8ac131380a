"""Training data sets."""
