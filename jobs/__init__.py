"""What runs inside a training process: data, models, metrics and the loop (`kbench.jobs.train`).

Needs torch; never imports the CLI.
"""
