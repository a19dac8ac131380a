"""Quality evaluation of the shipped models, one module per model (``python -m training.evaluate``)."""
