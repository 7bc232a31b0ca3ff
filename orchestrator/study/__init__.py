"""The study file and its grid: load and validate the YAML (config, values), expand it into
planned runs (grid), and what they cost (estimate, memory) or could add (suggest)."""
