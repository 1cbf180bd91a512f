"""Reports read only stored results."""
