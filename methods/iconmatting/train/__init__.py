"""Training the IconMatting in-context decoder: loss, schedule, data, loop."""
