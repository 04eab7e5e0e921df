"""Code that runs inside a trial: loss terms, tasks, objective, training loop and the Tune trainable.

Nothing here reads the environment or imports the service: a worker gets an explicit, validated config.
"""
