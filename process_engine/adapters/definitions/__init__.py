"""Definitions on disk: YAML loading and the watched folder."""
