"""Model training for imgrestore (never imports `services`)."""
