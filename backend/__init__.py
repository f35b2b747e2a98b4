"""The Label Studio side: server, RQ jobs. Uses the model only through model/'s public API."""
