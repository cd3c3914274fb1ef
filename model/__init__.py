"""Base-model bootstrap (offline) and the trained-model on-disk format."""
