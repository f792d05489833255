"""Decoding steered by a profile: the formula as data, its binding to an engine slot, the session, batching."""
