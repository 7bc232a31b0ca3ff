"""Running a study: the driver session (scheduler: one lock, one Ray), the Ray connection,
the dispatcher, the worker task and its messages, adaptive rounds, the progress display."""
