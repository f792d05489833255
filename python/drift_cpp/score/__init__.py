"""Zero-shot rewards: the attributes, the scorer that reads them off the small model, and its cache."""
