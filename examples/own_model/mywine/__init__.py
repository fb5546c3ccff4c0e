"""A user's own package: a model and a data loader that p2pfl finds by import path."""
