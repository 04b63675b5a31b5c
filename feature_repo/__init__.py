"""The Feast repository, generated from the use-case spec."""
