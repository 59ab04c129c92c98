"""fedfabric.fl_worker."""
