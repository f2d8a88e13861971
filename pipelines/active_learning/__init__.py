"""Active learning: the photos the models are least sure of go to annotators; their labels come back as a batch."""
