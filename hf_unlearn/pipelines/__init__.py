"""End-to-end benchmark pipelines run by `hf-unlearn run`."""
