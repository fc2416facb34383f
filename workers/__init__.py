"""jobgate's workers: they take jobs from the broker, run them on their model's provider and
record what happens. `python -m workers` runs one worker process."""
