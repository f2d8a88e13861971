"""Data: generate listing photos, validate a batch (Great Expectations), version it (DVC), split it."""
