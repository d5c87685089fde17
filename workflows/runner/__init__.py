"""The run machinery: planning units, the stage API, executors and workers, completion
records, the store's lifecycle, progress and the run's summary."""
