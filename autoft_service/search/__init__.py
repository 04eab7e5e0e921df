"""From a job spec to a running Ray Tune search: the space, the searcher and the Tuner."""
