"""Dataset reading, validation and writing (one reader/writer per format)."""
