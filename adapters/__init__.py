"""One module per backend protocol. Adapters know nothing of the registry or the router."""
