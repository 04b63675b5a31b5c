"""Stream workers: validate, dedup, impute, join delayed labels, keep features fresh."""
