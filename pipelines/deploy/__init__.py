"""Deploy: blue/green switch of reviewer Bentos behind the router on one machine."""
