"""Benchmark tasks, one folder each (data, evaluation, recipe, pipeline, report); no task imports another."""
