"""The run machinery: planning units, the stage API, executors and workers, completion
records and the run lock, the store's lifecycle, progress and the run's summary."""
