"""The restricted loading of pickled nets from files you don't trust."""
