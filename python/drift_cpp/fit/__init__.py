"""From preference pairs and their rewards to a profile: features, approximation, choice, screening,
the profile and its file, learning from picks, and many users at once."""
