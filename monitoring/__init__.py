"""Production monitoring: the prediction log and the drift reports read from it."""
